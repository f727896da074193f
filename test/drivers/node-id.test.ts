/**
 * One node id, one daemon: the built CLI's daemons on one store, as an operator starts them.
 * `npm test` builds dist/ first; run `npm run build` before running this file alone.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_PATH, assertCliBuilt, killAllDaemons, makeTempDir, removeTempDir, startDaemon } from '../helpers/daemon-process.js';

beforeAll(() => assertCliBuilt());

describe('a node id used by two daemons on one store', () => {
  let dir: string;
  beforeAll(async () => { dir = await makeTempDir('stowage-node-id-'); });
  afterAll(async () => {
    await killAllDaemons();
    await removeTempDir(dir);
  });
  const args = (root: string) => ['--root', join(dir, root), '--opt', `vfs.path=${join(dir, 'store')}`, '--node-id', 'n1', '--docker-host', 'none', '--heartbeat-interval', '0.2', '--stale-after', '30'];

  it('refuses the second at start, naming the first; after kill -9 the first root starts again at once, even with its id file damaged', async () => {
    const first = await startDaemon(join(dir, 'a.sock'), args('root-a'));
    const second = await execa('node', [CLI_PATH, 'daemon', '--socket', join(dir, 'b.sock'), ...args('root-b')], { reject: false, timeout: 20_000 });
    expect(second.exitCode).toBe(1);
    expect(second.stderr).toContain(`node id n1 is in use on this store by another stowage daemon (host`);
    expect(second.stderr).toContain(`pid ${first.pid})`);

    await first.stop('SIGKILL');
    const id = (await readFile(join(dir, 'root-a', 'node-instance'), 'utf8')).trim();
    expect(id).toMatch(/^[0-9a-f]{32}$/);
    await writeFile(join(dir, 'root-a', 'node-instance'), 'garbage');
    // The record on the store still names the killed process, seconds old: this machine's, and no process has that pid.
    const again = await startDaemon(join(dir, 'a.sock'), args('root-a'));
    expect((await readFile(join(dir, 'root-a', 'node-instance'), 'utf8')).trim()).toMatch(/^[0-9a-f]{32}$/);
    await again.stop('SIGTERM');
  });

  it('logs an error at every heartbeat while another instance writes its record (two started at the same moment)', async () => {
    const daemon = await startDaemon(join(dir, 'c.sock'), args('root-c'));
    const recordPath = join(dir, 'store', '.stowage', 'cluster', 'members', 'n1.json');
    const record = JSON.parse(await readFile(recordPath, 'utf8')) as Record<string, unknown>;
    const other = { ...record, instance: 'f'.repeat(32), pid: 4_000_000 };
    const deadline = Date.now() + 10_000;
    while (!daemon.stderr().includes('which rewrites this node\'s record') && Date.now() < deadline) {
      await writeFile(recordPath, JSON.stringify(other));
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(daemon.stderr()).toContain('node id n1 is in use on this store by another stowage daemon (host');
    expect(daemon.stderr()).toContain('pid 4000000), which rewrites this node\'s record');
    await daemon.stop('SIGTERM');
  });
});
