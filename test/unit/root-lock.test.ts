/** The state-root lock on the real file system: unix sockets the kernel releases on death. */
import { lstat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SocketRootLock } from '../../src/core/root-lock.js';
import { REPO_ROOT, assertCliBuilt, makeTempDir, removeTempDir } from '../helpers/daemon-process.js';

/** A separate process (the built module) that takes the lock and is then killed with SIGKILL, as a crash would. */
async function crashWhileHolding(root: string): Promise<void> {
  assertCliBuilt();
  const script = `
    const { SocketRootLock } = await import(${JSON.stringify(join(REPO_ROOT, 'dist', 'src', 'core', 'root-lock.js'))});
    await new SocketRootLock(${JSON.stringify(root)}).acquire();
    process.stdout.write('held\\n');
    setInterval(() => {}, 1000);`;
  const child = execa('node', ['--input-type=module', '-e', script], { reject: false, buffer: false });
  await new Promise<void>((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => { if (String(d).includes('held')) resolve(); });
    void child.then((r) => reject(new Error(`lock holder exited early (code ${r.exitCode})`)));
  });
  child.kill('SIGKILL');
  await child;
}

describe('SocketRootLock', { timeout: 60_000 }, () => {
  let root: string;
  const held: SocketRootLock[] = [];
  beforeEach(async () => { root = await makeTempDir('stowage-lock-'); });
  afterEach(async () => {
    await Promise.all(held.splice(0).map((l) => l.release()));
    await removeTempDir(root);
  });

  it('refuses a second holder while the first lives, and lets it in after a release', async () => {
    const first = new SocketRootLock(root);
    await first.acquire();
    held.push(first);
    expect((await lstat(join(root, 'daemon.lock'))).isSocket()).toBe(true);
    await expect(new SocketRootLock(root).acquire()).rejects.toThrow(/another stowage instance in this process uses the state root/);
    await first.release();
    const second = new SocketRootLock(root);
    await second.acquire();
    held.push(second);
  });

  it('is taken over after its holder was killed, whatever PID the successor has', async () => {
    await crashWhileHolding(root);
    expect((await lstat(join(root, 'daemon.lock'))).isSocket()).toBe(true);
    const successor = new SocketRootLock(root);
    await successor.acquire();
    held.push(successor);
  });

  it('lets exactly one of many simultaneous starters take over a dead holder\'s lock', async () => {
    await crashWhileHolding(root);
    const starters = Array.from({ length: 8 }, () => new SocketRootLock(root));
    const results = await Promise.allSettled(starters.map((l) => l.acquire()));
    starters.forEach((l, i) => { if (results[i]!.status === 'fulfilled') held.push(l); });
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    for (const r of results) {
      if (r.status === 'rejected') expect((r.reason as Error).message).toMatch(/another stowage instance in this process uses the state root/);
    }
  });

  it('takes over the pid file of an earlier version whose process is gone', async () => {
    await writeFile(join(root, 'daemon.lock'), '4194305\n');
    const lock = new SocketRootLock(root);
    await lock.acquire();
    held.push(lock);
    expect((await lstat(join(root, 'daemon.lock'))).isSocket()).toBe(true);
  });
});
