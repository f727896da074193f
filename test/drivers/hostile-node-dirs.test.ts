/**
 * Daemons from dist/ on a shared vfs store where another machine planted symlinks as nodes'
 * marker directories (`.stowage/cluster/mounts/<node>`): listing, forgetting, doctor and a start
 * never delete or write through them.
 */
import { lstat, mkdir, readdir, readFile, rmdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { assertCliBuilt, killAllDaemons, makeTempDir, removeTempDir, runCli, startDaemon } from '../helpers/daemon-process.js';

describe('node marker directories planted as symlinks in a shared store', () => {
  let dir: string;
  let store: string;
  let decoy: string;
  let mounts: string;
  const daemonArgs = (id: string) => ['--root', join(dir, `root-${id}`), '--opt', `vfs.path=${store}`, '--opt', 'vfs.shared=true',
    '--node-id', id, '--docker-host', 'none', '--heartbeat-interval', '0.2'];

  /** The decoy's files and their contents, which nothing may change. */
  const decoyFiles = async () => Object.fromEntries(await Promise.all((await readdir(decoy)).sort().map(async (name) =>
    [name, (await lstat(join(decoy, name))).isDirectory() ? 'dir' : await readFile(join(decoy, name), 'utf8')])));

  beforeEach(async () => {
    assertCliBuilt();
    dir = await makeTempDir('stowage-node-dirs-');
    store = join(dir, 'store');
    decoy = join(dir, 'decoy');
    mounts = join(store, '.stowage', 'cluster', 'mounts');
    await mkdir(join(decoy, 'sub'), { recursive: true });
    for (const name of ['passwd', 'shadow', 'hosts']) await writeFile(join(decoy, name), 'd\n');
    await mkdir(store);
  });

  afterEach(async () => {
    await killAllDaemons();
    expect(await decoyFiles()).toEqual({ hosts: 'd\n', passwd: 'd\n', shadow: 'd\n', sub: 'dir' });
    await removeTempDir(dir);
  });

  it('node list and doctor name the link as invalid; node forget deletes the link alone', async () => {
    const socket = join(dir, 'b.sock');
    await startDaemon(socket, daemonArgs('b'));
    await symlink(decoy, join(mounts, 'ghost'));
    const listed = await runCli(['--socket', socket, 'node', 'list']);
    expect(listed.stdout).toMatch(/"mounts\/ghost" .*invalid .*a symbolic link, not a directory of mount markers/);
    expect(listed.stdout).toMatch(/^ghost .*stale/m);
    const doctor = await runCli(['doctor', '--root', join(dir, 'root-c'), '--opt', `vfs.path=${store}`, '--opt', 'vfs.shared=true',
      '--node-id', 'c', '--docker-host', 'none'], { timeoutMs: 60_000 });
    expect(doctor.stdout).toMatch(/mounts\/ghost \(a symbolic link, not a directory of mount markers\)/);
    // Which volumes ghost mounts cannot be read: a remove is refused rather than let through.
    expect((await runCli(['--socket', socket, 'create', 'vol'])).exitCode).toBe(0);
    expect((await runCli(['--socket', socket, 'delete', 'vol'])).stderr).toMatch(/ghost .*mounts unknown \(mounts\/ghost is a symbolic link/);
    const forgot = await runCli(['--socket', socket, 'node', 'forget', 'ghost']);
    expect(forgot.exitCode, forgot.stderr).toBe(0);
    await expect(lstat(join(mounts, 'ghost'))).rejects.toMatchObject({ code: 'ENOENT' });
    expect((await runCli(['--socket', socket, 'delete', 'vol'])).exitCode).toBe(0);
  });

  it('a daemon whose own marker directory became a symlink while it was stopped refuses to start, naming it', async () => {
    const socket = join(dir, 'a.sock');
    const first = await startDaemon(socket, daemonArgs('a'));
    await first.stop();
    await rmdir(join(mounts, 'a'));
    await symlink(decoy, join(mounts, 'a'));
    await expect(startDaemon(socket, daemonArgs('a'))).rejects.toThrow(
      /mounts\/a, where node a keeps its mount markers, is a symbolic link, not a directory; stowage neither follows nor deletes through it/);
  });
});
