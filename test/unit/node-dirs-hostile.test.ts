/**
 * A node's marker directory (`cluster/mounts/<node>/`) and the markers in it come from the
 * shared store, which another machine may have written: a symlink planted there must never lead
 * a listing, a write or a delete out of the store. Run on the three ways stowage reaches files:
 * the daemon's port on a local filesystem (synchronous calls), node:fs/promises (the thread
 * pool, as on a network filesystem), and memfs (what the other unit tests use).
 */
import * as realFs from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SharedClock } from '../../src/core/clock.js';
import { DEFAULT_CLUSTER_SETTINGS } from '../../src/core/cluster/cluster.js';
import { deleteNodeFiles, settleLayout } from '../../src/core/cluster/layout-settle.js';
import { MemberReader } from '../../src/core/cluster/member-reader.js';
import { SharedCluster } from '../../src/core/cluster/shared-cluster.js';
import { ErrorCodes } from '../../src/core/errors.js';
import type { FsPort } from '../../src/core/fs-port.js';
import { asFsPort, LocalFirstFs } from '../../src/core/local-fs.js';
import { silentLogger, type Logger } from '../../src/core/logger.js';
import { mountsFromRecord } from '../helpers/local-mounts.js';
import { memFs } from '../helpers/memfs-stack.js';
import { swapForSymlinks } from '../helpers/symlink-swapper.js';

type Symlinking = FsPort & { symlink(target: string, path: string): Promise<void> };

interface World {
  fs: Symlinking;
  /** The cluster directory, inside the store. */
  cluster: string;
  /** A directory outside the store with files that must survive everything. */
  decoy: string;
  cleanup(): Promise<void>;
}

async function realWorld(port: (base: string) => FsPort): Promise<World> {
  const base = await realFs.mkdtemp(join(tmpdir(), 'stowage-node-dirs-'));
  return { fs: Object.assign(port(base), { symlink: realFs.symlink }) as Symlinking, cluster: join(base, 'store', '.stowage', 'cluster'),
    decoy: join(base, 'decoy'), cleanup: () => realFs.rm(base, { recursive: true, force: true }) };
}

const worlds: Record<string, () => Promise<World>> = {
  'a local filesystem (synchronous calls)': () => realWorld((base) => {
    const local = new LocalFirstFs();
    expect(local.trustIfLocal(base)).toBe(true);
    return asFsPort(local);
  }),
  'the thread pool (node:fs/promises)': () => realWorld(() => ({ ...realFs })),
  'memfs': async () => ({ fs: memFs() as Symlinking, cluster: '/store/.stowage/cluster', decoy: '/decoy', cleanup: async () => {} }),
};

const settings = { ...DEFAULT_CLUSTER_SETTINGS, heartbeatMs: 30, staleAfterMs: 150, version: 'test' };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Everything under `dir`: relative path -> "dir" or the file's content. */
async function snapshot(fs: FsPort, dir: string, rel = ''): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of (await fs.readdir(join(dir, rel))).sort()) {
    const key = join(rel, name);
    if ((await fs.lstat(join(dir, key))).isDirectory()) Object.assign(out, { [key]: 'dir' }, await snapshot(fs, dir, key));
    else out[key] = String(await fs.readFile(join(dir, key), 'utf8'));
  }
  return out;
}

function warnings(): Logger & { seen: string[] } {
  const seen: string[] = [];
  return { ...silentLogger, seen, warn: (m: string) => { seen.push(m); } };
}

describe.each(Object.entries(worlds))('node marker directories from a hostile store, on %s', (_name, make) => {
  let world: World;
  let before: Record<string, string>;
  const started: SharedCluster[] = [];

  async function setup(): Promise<World> {
    world = await make();
    const { fs, decoy } = world;
    await fs.mkdir(join(decoy, 'sub'), { recursive: true });
    for (const file of ['passwd', 'shadow', 'hosts', 'sub/keep']) await fs.writeFile(join(decoy, file), `precious ${file}\n`);
    for (const dir of ['members', 'mounts']) await fs.mkdir(join(world.cluster, dir), { recursive: true });
    before = await snapshot(fs, decoy);
    return world;
  }

  afterEach(async () => {
    await Promise.all(started.splice(0).map((c) => c.stop()));
    // Whatever happened in the store, nothing outside it was deleted or written.
    expect(await snapshot(world.fs, world.decoy)).toEqual(before);
    await world.cleanup();
  });

  async function node(id: string, mounts: Record<string, Record<string, number>> = {}, log: Logger = silentLogger) {
    const cluster = new SharedCluster(world.fs, world.cluster, id, new SharedClock(), settings, log);
    await cluster.start(mountsFromRecord(mounts));
    started.push(cluster);
    return cluster;
  }

  it('the directories of node directories and of records swapped for symlinks while nodes run: nothing is written or deleted through them', async () => {
    const { fs, cluster, decoy } = await setup();
    await fs.mkdir(join(cluster, 'mounts', 'ghost'));
    const a = await node('node-a', { vol: { m: 1 } });
    await node('node-b');
    // What the symlink leads to looks like marker directories: a heartbeat would take precious for a leftover marker.
    for (const dir of ['node-a', 'node-b', 'ghost']) {
      await fs.mkdir(join(decoy, 'm', dir), { recursive: true });
      await fs.writeFile(join(decoy, 'm', dir, 'precious'), `precious ${dir}\n`);
    }
    // And records: a heartbeat's rewrite of node-a.json would replace this one.
    await fs.mkdir(join(decoy, 'r'));
    await fs.writeFile(join(decoy, 'r', 'node-a.json'), 'precious record\n');
    before = await snapshot(fs, decoy);
    await fs.rename(join(cluster, 'mounts'), join(cluster, 'mounts.moved'));
    await fs.symlink(join(decoy, 'm'), join(cluster, 'mounts'));
    await fs.rename(join(cluster, 'members'), join(cluster, 'members.moved'));
    await fs.symlink(join(decoy, 'r'), join(cluster, 'members'));
    await sleep(100); // heartbeats
    await expect(a.markMounted('other')).rejects.toMatchObject({
      code: ErrorCodes.STATE_CORRUPT, message: expect.stringMatching(/mounts\/node-a leads to .*: a directory on the way was replaced by a symbolic link/),
    });
    await expect(a.forget('ghost')).rejects.toMatchObject({ code: ErrorCodes.STATE_CORRUPT });
    // Records that cannot be read from the store refuse a remove, forced or not: nodes must not vanish from its checks.
    for (const force of [false, true]) {
      await expect(a.assertRemovable('vol', { force })).rejects.toMatchObject({
        code: ErrorCodes.STATE_CORRUPT, message: expect.stringMatching(/members is a symbolic link, not the directory of node records; stowage neither follows/),
      });
    }
  });

  it('another node\'s directory that is a symlink is never listed: it blocks removes, and forget deletes the link alone', async () => {
    const { fs, cluster, decoy } = await setup();
    await fs.symlink(decoy, join(cluster, 'mounts', 'ghost'));
    const a = await node('node-a');
    const ghost = (await a.nodes()).find((n) => n.record.nodeId === 'ghost');
    expect(ghost).toMatchObject({ stale: true, mounted: [], markersUnreadable: 'mounts/ghost is a symbolic link, not a directory of mount markers' });
    expect(a.invalidNodes()).toEqual([{ file: 'mounts/ghost', problem: 'a symbolic link, not a directory of mount markers' }]);
    // Which volumes ghost mounts cannot be read, so no remove concludes that it mounts none.
    await expect(a.assertRemovable('any', { force: false })).rejects.toMatchObject({
      code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/ghost .*mounts unknown \(mounts\/ghost is a symbolic link/),
    });
    await a.forget('ghost');
    await expect(fs.lstat(join(cluster, 'mounts', 'ghost'))).rejects.toMatchObject({ code: 'ENOENT' });
    expect((await a.nodes()).map((n) => n.record.nodeId)).toEqual(['node-a']);
    await a.assertRemovable('any', { force: false });
  });

  it('a live node whose directory became a file or a symlink still blocks every remove', async () => {
    const { fs, cluster, decoy } = await setup();
    const a = await node('node-a');
    const b = await node('node-b');
    await fs.rm(join(cluster, 'mounts', 'node-b'), { recursive: true });
    await fs.symlink(decoy, join(cluster, 'mounts', 'node-b'));
    await expect(a.assertRemovable('vol', { force: false })).rejects.toMatchObject({
      code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/still used on node-b: mounts unknown/),
    });
    // Forced too: node-b is alive, and whatever it mounts cannot be told.
    await expect(a.assertRemovable('vol', { force: true })).rejects.toMatchObject({
      code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/^volume vol is mounted on node-b \(last heartbeat .*; its mounts cannot be read: .*symbolic link/),
    });
    // node-b's own mounts and heartbeats refuse the link too, and write nothing through it.
    await expect(b.markMounted('vol')).rejects.toMatchObject({
      code: ErrorCodes.STATE_CORRUPT, message: expect.stringMatching(/mounts\/node-b, where node node-b keeps its mount markers, is a symbolic link/),
    });
    await sleep(100);
    await fs.unlink(join(cluster, 'mounts', 'node-b'));
    await fs.writeFile(join(cluster, 'mounts', 'node-b'), '');
    await expect(a.assertRemovable('vol', { force: false })).rejects.toThrow(/mounts\/node-b is a regular file/);
  });

  it('a node whose own directory was replaced by a symlink refuses to start, and deletes or writes nothing there', async () => {
    const { fs, cluster, decoy } = await setup();
    await fs.symlink(decoy, join(cluster, 'mounts', 'node-a'));
    const clusterOfA = new SharedCluster(fs, cluster, 'node-a', new SharedClock(), settings, silentLogger);
    await expect(clusterOfA.start(mountsFromRecord({ vol: { m: 1 } }))).rejects.toMatchObject({
      code: ErrorCodes.STATE_CORRUPT,
      message: expect.stringMatching(/mounts\/node-a, where node node-a keeps its mount markers, is a symbolic link, not a directory; .*Move it away/),
    });
    await clusterOfA.stop();
  });

  it('entries that are not markers: a symlink goes as itself, a directory stays untouched', async () => {
    const { fs, cluster, decoy } = await setup();
    const own = join(cluster, 'mounts', 'node-a');
    await fs.mkdir(join(own, 'planted'), { recursive: true });
    await fs.writeFile(join(own, 'planted', 'inside'), 'kept');
    await fs.symlink(join(decoy, 'passwd'), join(own, 'linked'));
    await fs.symlink(decoy, join(own, 'vol'));
    const log = warnings();
    await node('node-a', { vol: { m: 1 } }, log);
    // The link under a mounted volume's name holds the name: it stays, and reads as the marker.
    expect((await fs.readdir(own)).sort()).toEqual(['planted', 'vol']);
    expect(await fs.readFile(join(own, 'planted', 'inside'), 'utf8')).toBe('kept');
    expect(log.seen).toEqual([expect.stringMatching(/mounts\/node-a\/planted is a directory, not a mount marker: left as it is/)]);
  });

  it('forget unlinks a stale node\'s symlinked markers as links, and stops at a directory among them, keeping the record', async () => {
    const { fs, cluster, decoy } = await setup();
    const markers = join(cluster, 'mounts', 'gone');
    await fs.mkdir(join(markers, 'planted'), { recursive: true });
    await fs.writeFile(join(markers, 'planted', 'inside'), 'kept');
    await fs.writeFile(join(markers, 'vol'), '');
    await fs.symlink(join(decoy, 'shadow'), join(markers, 'linked'));
    const a = await node('node-a');
    await expect(a.forget('gone')).rejects.toMatchObject({
      code: ErrorCodes.STATE_CORRUPT, message: expect.stringMatching(/mounts\/gone\/planted: a directory, not a mount marker; .*forget node gone again/),
    });
    expect(await fs.readdir(markers)).toEqual(['planted']);
    expect(await fs.readFile(join(markers, 'planted', 'inside'), 'utf8')).toBe('kept');
  });

  it('migrating a stale layout-1 record writes no marker through a symlink planted as its directory', async () => {
    const { fs, cluster, decoy } = await setup();
    await fs.mkdir(join(cluster, 'nodes'), { recursive: true });
    const record = { format: 1, nodeId: 'old', version: '0', host: 'h', pid: 1, startedAt: '', clockOffsetMs: 0, containers: {},
      docker: { reachable: false }, mounts: { vol: { m: 1 } } };
    await fs.writeFile(join(cluster, 'nodes', 'old.json'), JSON.stringify(record));
    await fs.utimes(join(cluster, 'nodes', 'old.json'), 1, 1);
    await fs.symlink(decoy, join(cluster, 'mounts', 'old'));
    await expect(settleLayout({ fs, dir: cluster, nodeId: 'node-a', clock: new SharedClock(), staleAfterMs: 150, log: silentLogger }))
      .rejects.toThrow(/mounts\/old is a symbolic link, not a directory of mount markers; .*Move it away by hand/);
  });
});

/**
 * A symlink swapped in for `members/` and out again, over and over, by another process: a check
 * of the path followed by a write or an unlink by the same path would sometimes pass the check
 * on the real directory and then act through the link. Only a descriptor opened once closes that window.
 */
describe.each(Object.entries(worlds).filter(([name]) => name !== 'memfs'))('members/ swapped back and forth for a symlink, on %s', (_name, make) => {
  it('heartbeats and forgets write and unlink nothing through it', async () => {
    const world = await make();
    const { fs, cluster, decoy } = world;
    try {
      const members = join(cluster, 'members');
      for (const dir of [members, join(cluster, 'mounts'), join(decoy, 'r')]) await fs.mkdir(dir, { recursive: true });
      // What a heartbeat of node-a would replace, and what forgetting ghost would unlink.
      for (const file of ['node-a.json', 'ghost.json']) await fs.writeFile(join(decoy, 'r', file), `precious ${file}\n`);
      const before = await snapshot(fs, decoy);
      const a = new SharedCluster(fs, cluster, 'node-a', new SharedClock(), { ...settings, heartbeatMs: 2 }, silentLogger);
      await a.start(mountsFromRecord({}));
      const realDir = await realFs.open(members, 'r');
      const swapper = swapForSymlinks([members], join(decoy, 'r'));
      let forgets = 0;
      while (swapper.running()) {
        // A ghost record in the real directory, whatever name it has this instant.
        await realFs.writeFile(`/proc/self/fd/${realDir.fd}/ghost.json`, '{}');
        await deleteNodeFiles(fs, cluster, 'ghost').then(() => { forgets += 1; }, () => undefined);
      }
      expect(await swapper.done).toBe(0);
      await a.stop();
      await realDir.close();
      expect(forgets).toBeGreaterThan(0);
      expect(await snapshot(fs, decoy)).toEqual(before);
      // The heartbeats went on into the real directory.
      expect(JSON.parse(await realFs.readFile(join(members, 'node-a.json'), 'utf8'))).toMatchObject({ nodeId: 'node-a' });
    } finally {
      await world.cleanup();
    }
  });

  it('records are read from the directory that was listed, never from what the link leads to', async () => {
    const world = await make();
    const { fs, cluster, decoy } = world;
    try {
      const members = join(cluster, 'members');
      for (const dir of [members, join(cluster, 'mounts'), join(decoy, 'r')]) await fs.mkdir(dir, { recursive: true });
      const record = (host: string) => JSON.stringify({ format: 2, nodeId: 'node-b', version: 'test', host, pid: 1, startedAt: '',
        clockOffsetMs: 0, containers: {}, docker: { configured: false, reachable: false } });
      await fs.writeFile(join(members, 'node-b.json'), record('real'));
      // Another machine's forgery of node-b's record: read through the link, it would stand for node-b.
      await fs.writeFile(join(decoy, 'r', 'node-b.json'), record('forged'));
      const reader = new MemberReader(fs, cluster, new SharedClock(), 60_000, silentLogger);
      const swapper = swapForSymlinks([members], join(decoy, 'r'));
      const hosts = new Set<string>();
      let reads = 0;
      while (swapper.running()) {
        const read = await reader.read().catch(() => undefined);
        if (!read) continue;
        reads += 1;
        for (const view of read.views) hosts.add(view.record.host);
      }
      expect(await swapper.done).toBe(0);
      expect(reads).toBeGreaterThan(0);
      expect([...hosts]).toEqual(['real']);
    } finally {
      await world.cleanup();
    }
  });

  it('locks made, renewed and broken under locks/ swapped back and forth touch nothing named like a lock outside the store', async () => {
    const world = await make();
    const { fs, cluster, decoy } = world;
    try {
      const locks = join(cluster, 'locks');
      for (const dir of [join(cluster, 'members'), join(cluster, 'mounts'), locks, join(decoy, 'l')]) await fs.mkdir(dir, { recursive: true });
      // Files a lock of v0..v4 would be created over, and, old and unreadable, broken as an abandoned lock.
      for (let i = 0; i < 5; i += 1) {
        await fs.writeFile(join(decoy, 'l', `v${i}.lock`), `precious ${i}\n`);
        await fs.utimes(join(decoy, 'l', `v${i}.lock`), 1, 1);
      }
      const before = await snapshot(fs, decoy);
      const a = new SharedCluster(fs, cluster, 'node-a', new SharedClock(), { ...settings, lockTtlMs: 300, lockWaitMs: 2000 }, silentLogger);
      await a.start(mountsFromRecord({}));
      const swapper = swapForSymlinks([locks], join(decoy, 'l'));
      let held = 0;
      while (swapper.running()) {
        await Promise.all([0, 1, 2, 3, 4].map((i) => a.withLock(`v${i}`, async () => {
          held += 1;
          // Long enough, now and then, for a renewal (every 100 ms) to run while the link is in place.
          await sleep(i === 0 ? 120 : 5);
        }).catch(() => undefined)));
      }
      expect(await swapper.done).toBe(0);
      await a.stop();
      expect(held).toBeGreaterThan(0);
      expect(await snapshot(fs, decoy)).toEqual(before);
      // Every lock went where it was made and was released there.
      expect(await realFs.readdir(locks)).toEqual([]);
    } finally {
      await world.cleanup();
    }
  });

  it('a node whose marker directory was removed makes it again only inside the store', async () => {
    const world = await make();
    const { fs, cluster, decoy } = world;
    try {
      for (const dir of [join(cluster, 'members'), join(cluster, 'mounts'), join(decoy, 'm')]) await fs.mkdir(dir, { recursive: true });
      const a = new SharedCluster(fs, cluster, 'node-a', new SharedClock(), settings, silentLogger);
      await a.start(mountsFromRecord({}));
      await a.stop();
      await realFs.rm(join(cluster, 'mounts', 'node-a'), { recursive: true });
      await realFs.rename(join(cluster, 'mounts'), join(cluster, 'mounts.real'));
      await realFs.symlink(join(decoy, 'm'), join(cluster, 'mounts'));
      await expect(a.markMounted('vol')).rejects.toMatchObject({ code: ErrorCodes.STATE_CORRUPT });
      expect(await realFs.readdir(join(decoy, 'm'))).toEqual([]);
      // With the cluster directory gone altogether (a store no longer mounted), nothing is made either.
      await realFs.unlink(join(cluster, 'mounts'));
      await expect(a.markMounted('vol')).rejects.toMatchObject({
        code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/mounts, the directory of mount markers of every node, is missing: is the store's filesystem still mounted\?/),
      });
      await expect(realFs.lstat(join(cluster, 'mounts'))).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      await world.cleanup();
    }
  });
});
