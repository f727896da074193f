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
  const args = (root: string, node = 'n1') => ['--root', join(dir, root), '--opt', `vfs.path=${join(dir, 'store')}`, '--node-id', node, '--docker-host', 'none', '--heartbeat-interval', '0.2', '--stale-after', '30'];

  it('refuses the second at start, naming the first; after kill -9 the first root starts again at once, and with its id file damaged once the record is stale', async () => {
    const fast = (root: string) => [...args(root).slice(0, -2), '--stale-after', '2'];
    const first = await startDaemon(join(dir, 'a.sock'), fast('root-a'));
    const second = await execa('node', [CLI_PATH, 'daemon', '--socket', join(dir, 'b.sock'), ...fast('root-b')], { reject: false, timeout: 20_000 });
    expect(second.exitCode).toBe(1);
    expect(second.stderr).toContain(`node id n1 is in use on this store by another stowage daemon (host`);
    expect(second.stderr).toContain(`pid ${first.pid})`);

    await first.stop('SIGKILL');
    const restarted = await startDaemon(join(dir, 'a.sock'), fast('root-a'));
    await restarted.stop('SIGKILL');
    // A damaged id cannot tell this root's dead run from another daemon: it waits, and the file stays as it is until then.
    await writeFile(join(dir, 'root-a', 'node-instance'), 'garbage');
    const early = await execa('node', [CLI_PATH, 'daemon', '--socket', join(dir, 'a.sock'), ...fast('root-a')], { reject: false, timeout: 20_000 });
    expect(early.exitCode).toBe(1);
    expect(early.stderr).toContain(`pid ${restarted.pid}): every node sharing a store needs its own node id`);
    expect(await readFile(join(dir, 'root-a', 'node-instance'), 'utf8')).toBe('garbage');
    await new Promise((r) => setTimeout(r, 2_500));
    const again = await startDaemon(join(dir, 'a.sock'), fast('root-a'));
    expect((await readFile(join(dir, 'root-a', 'node-instance'), 'utf8')).trim()).toMatch(/^[0-9a-f]{32}$/);
    await again.stop('SIGTERM');
  });

  it('logs an error when another instance writes its record (two started at the same moment), once and not at every heartbeat', async () => {
    const daemon = await startDaemon(join(dir, 'c.sock'), args('root-c', 'n2'));
    const recordPath = join(dir, 'store', '.stowage', 'cluster', 'members', 'n2.json');
    const record = JSON.parse(await readFile(recordPath, 'utf8')) as Record<string, unknown>;
    const other = { ...record, instance: 'f'.repeat(32), pid: 4_000_000 };
    const deadline = Date.now() + 10_000;
    while (!daemon.stderr().includes('which rewrites this node\'s record') && Date.now() < deadline) {
      await writeFile(recordPath, JSON.stringify(other));
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(daemon.stderr()).toContain('node id n2 is in use on this store by another stowage daemon (host');
    expect(daemon.stderr()).toContain('pid 4000000), which rewrites this node\'s record');
    // Said once, not at every heartbeat (the next time is ten minutes later).
    const until = Date.now() + 1_000;
    while (Date.now() < until) {
      await writeFile(recordPath, JSON.stringify(other));
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(daemon.stderr().split('which rewrites this node\'s record')).toHaveLength(2);
    await daemon.stop('SIGTERM');
  });
});
