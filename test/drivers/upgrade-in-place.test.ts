/**
 * The CLI bundle loads some code from chunks on first use. A daemon whose files were replaced
 * under it (an upgrade in place) may find a chunk gone: the request that needed it fails saying
 * so and how to recover, and the plugin calls, already loaded, go on.
 */
import { cp, copyFile, mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_PATH, REPO_ROOT, assertCliBuilt, killAllDaemons, makeTempDir, removeTempDir, runCli, startDaemon } from '../helpers/daemon-process.js';
import { listedNames, pluginCall } from '../helpers/plugin-client.js';

describe('a daemon whose files changed after it started', () => {
  let dir: string;

  beforeAll(async () => {
    assertCliBuilt();
    dir = await makeTempDir('stowage-upgrade-');
  });
  afterAll(async () => {
    await killAllDaemons();
    await removeTempDir(dir);
  });

  it('answers a control request whose code is gone with "restart it", and plugin calls still work', async () => {
    // A copy of the installed package: the entry and its chunks, and the package.json it reads.
    const pkg = join(dir, 'pkg');
    await mkdir(join(pkg, 'dist'), { recursive: true });
    await cp(join(CLI_PATH, '..'), join(pkg, 'dist', 'bin'), { recursive: true });
    await copyFile(join(REPO_ROOT, 'package.json'), join(pkg, 'package.json'));
    const socket = join(dir, 's.sock');
    const daemon = await startDaemon(socket, ['--root', join(dir, 'root'), '--opt', `vfs.path=${join(dir, 'store')}`, '--docker-host', 'none'],
      { cliPath: join(pkg, 'dist', 'bin', 'stowage.mjs') });
    const chunks = (await readdir(join(pkg, 'dist', 'bin'))).filter((f) => f.startsWith('control-app-'));
    expect(chunks).toHaveLength(1);
    await rm(join(pkg, 'dist', 'bin', chunks[0]!));

    const listed = await runCli(['--socket', socket, 'list']);
    expect(listed.exitCode).toBe(1);
    expect(listed.stderr).toMatch(/cannot load the control API: stowage's files changed after this process started \(an upgrade in place\?\); restart it/);
    expect(await pluginCall(socket, 'Create', { Name: 'still', Opts: {} })).toEqual({ httpStatus: 200 });
    expect(await listedNames(socket)).toEqual(['still']);
    await daemon.stop();
  });
});
