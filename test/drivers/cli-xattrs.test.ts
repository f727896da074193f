/**
 * `--no-xattrs` through the built CLI and a real daemon: a backup or snapshot made with it holds
 * no extended attributes and says so, a restore of it sets none, and where it cannot apply the
 * command is refused and nothing is made. Real files, real getfattr and setfattr.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { XATTRS_LEFT_OUT } from '../../src/core/backup/backup.js';
import { assertCliBuilt, killAllDaemons, makeTempDir, removeTempDir, runCli, startDaemon } from '../helpers/daemon-process.js';
import { pluginCall } from '../helpers/plugin-client.js';

const lastLine = (text: string) => text.trim().split('\n').at(-1)!;

describe('stowage backup create and snapshot create --no-xattrs', () => {
  let dir: string;
  let socket: string;
  const cli = (...args: string[]) => runCli(['--socket', socket, ...args], { timeoutMs: 60_000 });

  beforeAll(async () => {
    assertCliBuilt();
    dir = await makeTempDir('stowage-cli-xattrs-');
    socket = join(dir, 's.sock');
    await startDaemon(socket, ['--root', join(dir, 'root')]);
  });
  afterAll(async () => {
    await killAllDaemons();
    await removeTempDir(dir);
  });

  /** The value of user.origin on `file` in volume `name`, or undefined when it has none. */
  async function origin(name: string, file: string): Promise<string | undefined> {
    const mounted = await pluginCall(socket, 'Mount', { Name: name, ID: 'look' });
    try {
      const got = await execa('getfattr', ['--only-values', '-n', 'user.origin', join(mounted.Mountpoint as string, file)], { reject: false });
      return got.exitCode === 0 ? String(got.stdout) : undefined;
    } finally {
      await pluginCall(socket, 'Unmount', { Name: name, ID: 'look' });
    }
  }

  it('leaves the attributes out, says so, and restores none; a backup without the flag reads them again', { timeout: 120_000 }, async () => {
    const dest = `vfs://${join(dir, 'backups')}`;
    expect((await cli('create', 'tagged')).exitCode).toBe(0);
    const mounted = await pluginCall(socket, 'Mount', { Name: 'tagged', ID: 'w' });
    await execa('sh', ['-c', 'echo data > "$1/f" && setfattr -n user.origin -v kept "$1/f"', 'sh', mounted.Mountpoint as string]);
    await pluginCall(socket, 'Unmount', { Name: 'tagged', ID: 'w' });

    const bare = await cli('backup', 'create', 'tagged', '--dest', dest, '--no-xattrs');
    expect(bare.exitCode, bare.stderr).toBe(0);
    const bareUrl = lastLine(bare.stdout);
    expect(JSON.parse((await cli('backup', 'inspect', bareUrl)).stdout)).toMatchObject({ notes: [XATTRS_LEFT_OUT] });
    expect((await cli('create', 'from-bare', '--backup', bareUrl)).exitCode).toBe(0);
    expect(await origin('from-bare', 'f')).toBeUndefined();

    // The next backup without the flag has a parent whose attributes were not read: it reads them all.
    const full = await cli('backup', 'create', 'tagged', '--dest', dest);
    expect(full.exitCode, full.stderr).toBe(0);
    expect(JSON.parse((await cli('backup', 'inspect', lastLine(full.stdout))).stdout).notes).toBeUndefined();
    expect((await cli('create', 'from-full', '--backup', lastLine(full.stdout))).exitCode).toBe(0);
    expect(await origin('from-full', 'f')).toBe('kept');

    // A snapshot taken without them, and a backup of it: the copy keeps the note.
    expect((await cli('snapshot', 'create', 'tagged', 'bare', '--no-xattrs')).stdout).toBe('tagged/bare');
    const ofSnapshot = await cli('backup', 'create', 'tagged/bare', '--dest', dest);
    expect(ofSnapshot.exitCode, ofSnapshot.stderr).toBe(0);
    expect(JSON.parse((await cli('backup', 'inspect', lastLine(ofSnapshot.stdout))).stdout)).toMatchObject({ notes: [XATTRS_LEFT_OUT], snapshot: 'bare' });
    expect((await cli('create', 'from-snapshot', '--backup', lastLine(ofSnapshot.stdout))).exitCode).toBe(0);
    expect(await origin('from-snapshot', 'f')).toBeUndefined();
  });

  it('refuses where it cannot apply, and makes nothing', { timeout: 60_000 }, async () => {
    const dest = `vfs://${join(dir, 'refusals')}`;
    expect((await cli('create', 'plain')).exitCode).toBe(0);
    expect((await cli('snapshot', 'create', 'plain', 'taken')).exitCode).toBe(0);
    const ofSnapshot = await cli('backup', 'create', 'plain/taken', '--dest', dest, '--no-xattrs');
    expect(ofSnapshot.exitCode).toBe(1);
    expect(ofSnapshot.stderr).toContain('snapshot taken of plain already holds what was read when it was taken');
    const block = await cli('backup', 'create', 'plain', '--dest', dest, '--no-xattrs', '--kind', 'block');
    expect(block.exitCode).toBe(1);
    expect(block.stderr).toContain('a block backup copies the filesystem whole');
    const badName = await cli('backup', 'create', 'plain/..x', '--dest', dest);
    expect(badName.exitCode).toBe(1);
    expect(badName.stderr).toMatch(/invalid (volume|snapshot) name/);
    // Refused as requests: no job was started for any of them.
    expect((JSON.parse((await cli('job', 'list', '--json')).stdout) as { target: string }[]).filter((j) => j.target === 'plain')).toEqual([]);
    // No repository was made, and the snapshot was not touched.
    expect(existsSync(join(dir, 'refusals'))).toBe(false);
    expect((JSON.parse((await cli('snapshot', 'list', 'plain', '--json')).stdout) as { name: string }[]).map((s) => s.name)).toEqual(['taken']);
  });
});
