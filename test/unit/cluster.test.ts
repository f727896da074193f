import { afterEach, describe, expect, it } from 'vitest';
import { SharedClock } from '../../src/core/clock.js';
import { DEFAULT_CLUSTER_SETTINGS, type ClusterSettings } from '../../src/core/cluster/cluster.js';
import { mountsFromRecord } from '../helpers/local-mounts.js';
import { ClusterLocks } from '../../src/core/cluster/cluster-lock.js';
import { SharedCluster } from '../../src/core/cluster/shared-cluster.js';
import { ErrorCodes } from '../../src/core/errors.js';
import type { FsPort } from '../../src/core/fs-port.js';
import { silentLogger } from '../../src/core/logger.js';
import { memFs } from '../helpers/memfs-stack.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const settings = (extra: Partial<ClusterSettings> = {}): ClusterSettings => ({
  ...DEFAULT_CLUSTER_SETTINGS, heartbeatMs: 30, staleAfterMs: 150, version: 'test', ...extra,
});

/** A view of the same storage whose clock runs `shiftMs` ahead of this process's clock. */
function storageClockAhead(fs: FsPort, shiftMs: number): FsPort {
  return {
    ...fs,
    stat: (async (path: string) => {
      const st = await fs.stat(path);
      return Object.assign(st, { mtimeMs: st.mtimeMs + shiftMs });
    }) as FsPort['stat'],
  };
}

describe('SharedCluster', () => {
  const started: SharedCluster[] = [];
  afterEach(async () => {
    await Promise.all(started.splice(0).map((c) => c.stop()));
  });

  async function node(fs: FsPort, id: string, mounts: Record<string, Record<string, number>> = {}, extra: Partial<ClusterSettings> = {}) {
    const clock = new SharedClock();
    const cluster = new SharedCluster(fs, '/shared/cluster', id, clock, settings(extra), silentLogger);
    await cluster.start(mountsFromRecord(mounts));
    started.push(cluster);
    return { cluster, clock, mounts };
  }

  it('refuses a remove while another node mounts the volume, naming the node, and allows it after', async () => {
    const fs = memFs();
    const a = await node(fs, 'node-a');
    const b = await node(fs, 'node-b', { vol: { 'mount-1': 2 } });
    await expect(a.cluster.assertRemovable('vol', { force: false }))
      .rejects.toMatchObject({ code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/still used on node-b: mounted/) });
    // Forced, still refused: node-b is alive, and a container there may be writing (as a mount here is never overridden).
    await expect(a.cluster.assertRemovable('vol', { force: true })).rejects.toMatchObject({
      code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/^volume vol is mounted on node-b \(last heartbeat \d+ s ago\), whose daemon is alive: a forced remove overrides/),
    });
    await a.cluster.assertRemovable('other', { force: false });
    expect(await fs.readdir('/shared/cluster/mounts/node-b')).toEqual(['vol']);
    delete b.mounts.vol;
    await b.cluster.markUnmounted('vol');
    // No heartbeat needed: the marker is gone when the last unmount answers.
    await a.cluster.assertRemovable('vol', { force: false });
    await a.cluster.assertRemovable('vol', { force: true });
    await b.cluster.markMounted('vol');
    await expect(a.cluster.assertRemovable('vol', { force: false })).rejects.toMatchObject({ code: ErrorCodes.VOLUME_IN_USE });
  });

  it('a record readdir lists but whose open answers ENOENT for a while (a FUSE client\'s stale entry) still counts; a forgotten one does not', async () => {
    const fs = memFs();
    const a = await node(fs, 'node-a');
    const b = await node(fs, 'node-b', { vol: { 'mount-1': 1 } });
    let misses = 0;
    // What a GlusterFS client does for about a second after another node replaced the file.
    const staleEntries: FsPort = {
      ...fs,
      open: (async (...args: Parameters<FsPort['open']>) => {
        if (String(args[0]).endsWith('/members/node-b.json') && misses < 3) {
          misses += 1;
          throw Object.assign(new Error('ENOENT: no such file or directory'), { code: 'ENOENT' });
        }
        return fs.open(...args);
      }) as FsPort['open'],
    };
    const viewer = new SharedCluster(staleEntries, '/shared/cluster', 'node-c', new SharedClock(), settings(), silentLogger);
    await viewer.start(mountsFromRecord({}));
    started.push(viewer);
    misses = 0;
    await expect(viewer.assertRemovable('vol', { force: false }))
      .rejects.toMatchObject({ code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/still used on node-b/) });
    expect(misses).toBe(3);
    expect((await viewer.nodes()).map((n) => n.record.nodeId)).toContain('node-b');
    // Gone from the listing (forgotten): skipped, not waited for.
    await b.cluster.stop();
    await fs.unlink('/shared/cluster/members/node-b.json');
    await fs.rm('/shared/cluster/mounts/node-b', { recursive: true });
    misses = 0;
    expect((await viewer.nodes()).map((n) => n.record.nodeId)).not.toContain('node-b');
    await a.cluster.assertRemovable('vol', { force: false });
  });

  it('a record whose read answers ESTALE (a handle to the file another node just replaced) is read again, not skipped', async () => {
    const fs = memFs();
    await node(fs, 'node-a');
    await node(fs, 'node-b', { vol: { 'mount-1': 1 } });
    let stale = 0;
    // What Node reports for ESTALE: libuv has no name for it, so errno -116 and no errno code.
    const replacedUnderfoot: FsPort = {
      ...fs,
      open: (async (...args: Parameters<FsPort['open']>) => {
        const handle = await fs.open(...args);
        if (!String(args[0]).endsWith('/members/node-b.json') || stale >= 2) return handle;
        stale += 1;
        return Object.assign(Object.create(handle) as typeof handle, {
          stat: async () => { throw Object.assign(new Error('Unknown system error -116'), { errno: -116 }); },
          close: () => handle.close(),
        });
      }) as FsPort['open'],
    };
    const viewer = new SharedCluster(replacedUnderfoot, '/shared/cluster', 'node-c', new SharedClock(), settings(), silentLogger);
    await viewer.start(mountsFromRecord({}));
    started.push(viewer);
    stale = 0;
    const seen = (await viewer.nodes()).find((n) => n.record.nodeId === 'node-b');
    // Its own record, not the stand-in its mount marker alone would give (no heartbeat, containers unknown).
    expect(seen).toMatchObject({ mounted: ['vol'], stale: false });
    expect(seen?.lastHeartbeat).not.toBe('never');
    expect(stale).toBe(2);
    expect(viewer.invalidNodes()).toEqual([]);
  });

  it('names a stale node and the ways out; force and forget both let the remove through', async () => {
    const fs = memFs();
    const a = await node(fs, 'node-a');
    const b = await node(fs, 'node-b', { vol: { m: 1 } });
    await b.cluster.stop(); // like SIGKILL: the record stays, heartbeats stop
    await sleep(250);
    const err = await a.cluster.assertRemovable('vol', { force: false }).catch((e: Error) => e);
    expect(err).toMatchObject({ code: ErrorCodes.VOLUME_IN_USE });
    expect((err as Error).message).toMatch(/node-b \(last heartbeat \d+ s ago\): mounted/);
    // The ways out are data; each shell words them (test/drivers/remedies.test.ts).
    expect(err).toMatchObject({ remedies: [{ action: 'forget-node', node: 'node-b' }, { action: 'force-remove', volume: 'vol' }] });
    await a.cluster.assertRemovable('vol', { force: true });
    expect((await a.cluster.nodes()).find((n) => n.record.nodeId === 'node-b')?.stale).toBe(true);
    await a.cluster.forget('node-b');
    expect((await a.cluster.nodes()).map((n) => n.record.nodeId)).toEqual(['node-a']);
    expect(await fs.readdir('/shared/cluster/mounts')).toEqual(['node-a']);
    await a.cluster.assertRemovable('vol', { force: false });
  });

  it('a node whose markers were deleted while it ran (forgotten while paused) writes them again at its next heartbeat', async () => {
    const fs = memFs();
    const a = await node(fs, 'node-a');
    await node(fs, 'node-b', { vol: { m: 1 } });
    // What `forget node-b` deletes, as it would have while node-b was paused past --stale-after.
    await fs.rm('/shared/cluster/mounts/node-b', { recursive: true, force: true });
    await sleep(100); // past a few of node-b's heartbeats (30 ms)
    expect(await fs.readdir('/shared/cluster/mounts/node-b')).toEqual(['vol']);
    await expect(a.cluster.assertRemovable('vol', { force: false }))
      .rejects.toMatchObject({ code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/still used on node-b: mounted/) });
  });

  it('counts markers of a node without a record as a stopped node, which forget clears', async () => {
    const fs = memFs();
    const a = await node(fs, 'node-a');
    await fs.mkdir('/shared/cluster/mounts/ghost', { recursive: true });
    await fs.writeFile('/shared/cluster/mounts/ghost/vol', '');
    await expect(a.cluster.assertRemovable('vol', { force: false }))
      .rejects.toMatchObject({ code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/ghost \(no node record, only mount markers\): mounted/) });
    await a.cluster.forget('ghost');
    await a.cluster.assertRemovable('vol', { force: false });
  });

  it('a restarted node drops markers its mount table no longer has, and makes the missing ones', async () => {
    const fs = memFs();
    await fs.mkdir('/shared/cluster/mounts/node-a', { recursive: true });
    await fs.writeFile('/shared/cluster/mounts/node-a/gone', '');
    const a = await node(fs, 'node-a', { kept: { m: 1 } });
    expect(await fs.readdir('/shared/cluster/mounts/node-a')).toEqual(['kept']);
    // A marker whose unlink failed at the last unmount goes at the next heartbeat.
    await fs.writeFile('/shared/cluster/mounts/node-a/leaked', '');
    await sleep(200);
    expect(await fs.readdir('/shared/cluster/mounts/node-a')).toEqual(['kept']);
    expect(a.mounts).toEqual({ kept: { m: 1 } });
  });

  it('forgets only stale, known, other nodes', async () => {
    const fs = memFs();
    const a = await node(fs, 'node-a');
    await node(fs, 'node-b');
    await expect(a.cluster.forget('node-b')).rejects.toThrow(/sent a heartbeat 0 s ago; stop its stowage daemon first/);
    await expect(a.cluster.forget('node-a')).rejects.toMatchObject({ code: ErrorCodes.INVALID_REQUEST });
    await expect(a.cluster.forget('node-z')).rejects.toMatchObject({ code: ErrorCodes.NODE_NOT_FOUND });
  });

  it('shows which nodes use a volume in its status', async () => {
    const fs = memFs();
    const a = await node(fs, 'node-a', { vol: { x: 1 } });
    await node(fs, 'node-b', { vol: { y: 1, z: 1 } });
    await a.cluster.nodes();
    expect(a.cluster.usage('vol')).toEqual({ usedBy: 'node-a: 1 mount(s); node-b: mounted', mountedOn: 'node-a, node-b' });
    expect(a.cluster.usage('unused')).toEqual({ usedBy: 'no node', mountedOn: 'no node' });
  });

  it("a remove's check reads the other nodes only, and keeps this node in the status and its problems reported", async () => {
    const fs = memFs();
    const read: string[] = [];
    const watched: FsPort = {
      ...fs,
      open: (async (...args: Parameters<FsPort['open']>) => { read.push(String(args[0])); return fs.open(...args); }) as FsPort['open'],
      readdir: (async (...args: Parameters<FsPort['readdir']>) => { read.push(String(args[0])); return fs.readdir(...args); }) as FsPort['readdir'],
    };
    // No heartbeat of node-a during the check: it would read node-a's files, as it should.
    const a = await node(watched, 'node-a', { vol: { x: 1 } }, { heartbeatMs: 60_000, staleAfterMs: 120_000 });
    await node(fs, 'node-b', { vol: { y: 1 } });
    // A problem with node-a's own markers, as a heartbeat's full read reports it.
    await fs.writeFile('/shared/cluster/mounts/node-a/.keep', '');
    await fs.mkdir('/shared/cluster/mounts/node-a/not a volume');
    await a.cluster.nodes();
    expect(a.cluster.invalidNodes().map((i) => i.file)).toEqual(['mounts/node-a/not a volume']);
    read.length = 0;
    await expect(a.cluster.assertRemovable('vol', { force: false })).rejects.toMatchObject({ message: expect.stringMatching(/still used on node-b/) });
    expect(read.filter((path) => path.includes('node-a'))).toEqual([]);
    expect(read).toContain('/shared/cluster/members/node-b.json');
    expect(a.cluster.usage('vol')).toEqual({ usedBy: 'node-a: 1 mount(s); node-b: mounted', mountedOn: 'node-a, node-b' });
    expect(a.cluster.invalidNodes().map((i) => i.file)).toEqual(['mounts/node-a/not a volume']);
  });

  it('takes times from the storage clock and reports a skewed local clock', async () => {
    const fs = memFs();
    const threeHours = 3 * 3600_000;
    const skewed = await node(storageClockAhead(fs, threeHours), 'node-skewed');
    expect(skewed.clock.localOffsetMs).toBeLessThan(-threeHours + 1000);
    expect(skewed.clock.localOffsetMs).toBeGreaterThan(-threeHours - 1000);
    expect(Math.abs(skewed.clock.now() - (Date.now() + threeHours))).toBeLessThan(1000);
    expect(skewed.cluster.info().clockSkew).toMatch(/this node's clock is -10800 s off/);
    const sane = await node(fs, 'node-sane');
    expect(sane.cluster.info().clockSkew).toBe('ok');
    expect(sane.cluster.info().skewedNodes).toBe('node-skewed (-10800 s)');
  });
});

describe('ClusterLocks', () => {
  const lockSettings = { ttlMs: 200, waitMs: 2_000 };

  it('never lets two holders in at once, across lock instances on one directory', async () => {
    const fs = memFs();
    const clock = new SharedClock();
    const a = new ClusterLocks(fs, '/locks', 'node-a', clock, lockSettings);
    const b = new ClusterLocks(fs, '/locks', 'node-b', clock, lockSettings);
    await fs.mkdir('/locks', { recursive: true });
    let inside = 0;
    let peak = 0;
    let done = 0;
    await Promise.all(Array.from({ length: 12 }, (_, i) => (i % 2 ? a : b).withLock('name', async () => {
      inside += 1;
      peak = Math.max(peak, inside);
      await sleep(5);
      inside -= 1;
      done += 1;
    })));
    expect(peak).toBe(1);
    expect(done).toBe(12);
    expect(await fs.readdir('/locks')).toEqual([]);
  });

  it('breaks a lock whose holder died and whose expiry passed', async () => {
    const fs = memFs();
    await fs.mkdir('/locks', { recursive: true });
    const clock = new SharedClock();
    await fs.writeFile('/locks/vol.lock', JSON.stringify({ owner: 'dead-node', token: 't', expiresAt: clock.now() - 1 }));
    const locks = new ClusterLocks(fs, '/locks', 'node-a', clock, lockSettings);
    expect(await locks.withLock('vol', async () => 'got it')).toBe('got it');
  });

  it('takes over at once a lock that an earlier run of this node left, but not another node\'s', async () => {
    const fs = memFs();
    await fs.mkdir('/locks', { recursive: true });
    const clock = new SharedClock();
    // A run of node-a killed mid-create: its lock would otherwise block for the whole ttl.
    await fs.writeFile('/locks/vol.lock', JSON.stringify({ owner: 'node-a', token: 'ab', expiresAt: clock.now() + 60_000, run: 'dead0' }));
    const restarted = new ClusterLocks(fs, '/locks', 'node-a', clock, { ttlMs: 60_000, waitMs: 300 });
    expect(await restarted.withLock('vol', async () => 'got it')).toBe('got it');
    await fs.writeFile('/locks/vol.lock', JSON.stringify({ owner: 'node-b', token: 'ab', expiresAt: clock.now() + 60_000, run: 'a11fe' }));
    await expect(restarted.withLock('vol', async () => 'stole it')).rejects.toThrow(/locked by node node-b/);
    // The same run's own lock is never broken: a second caller waits for the first.
    await fs.unlink('/locks/vol.lock');
    let release!: () => void;
    const held = restarted.withLock('vol', () => new Promise<void>((r) => { release = r; }));
    await sleep(20);
    await expect(restarted.withLock('vol', async () => 'twice')).rejects.toThrow(/locked by node node-a/);
    release();
    await held;
  });

  it('keeps a live lock through renewals and names its owner to a waiter that gives up', async () => {
    const fs = memFs();
    await fs.mkdir('/locks', { recursive: true });
    const clock = new SharedClock();
    // A holder whose renewals miss 4/5 of the ttl stops renewing, so the ttl leaves room for a busy machine.
    const holder = new ClusterLocks(fs, '/locks', 'node-a', clock, { ttlMs: 300, waitMs: 2_000 });
    const waiter = new ClusterLocks(fs, '/locks', 'node-b', clock, { ttlMs: 300, waitMs: 1_000 });
    let release!: () => void;
    const held = holder.withLock('vol', () => new Promise<void>((r) => { release = r; }));
    await sleep(20);
    // The holder works longer than the ttl; renewal must keep the waiter out.
    await expect(waiter.withLock('vol', async () => 'stole it')).rejects.toThrow(/locked by node node-a/);
    release();
    await held;
    expect(await waiter.withLock('vol', async () => 'after release')).toBe('after release');
  });
});

describe('records read from shared storage are checked, skipped and reported', () => {
  const started: SharedCluster[] = [];
  afterEach(async () => {
    await Promise.all(started.splice(0).map((c) => c.stop()));
  });

  async function nodeOn(fs: FsPort, id: string) {
    const cluster = new SharedCluster(fs, '/shared/cluster', id, new SharedClock(), settings(), silentLogger);
    await cluster.start(mountsFromRecord({}));
    started.push(cluster);
    return cluster;
  }

  const validRecord = (nodeId: string, extra: Record<string, unknown> = {}) => JSON.stringify({
    format: 2, nodeId, version: 'x', host: 'h', pid: 1, startedAt: 'now', clockOffsetMs: 0,
    containers: {}, docker: { reachable: false }, ...extra,
  });

  it('asks the mount table per volume at each heartbeat and for mount counts, never for all of it', async () => {
    const fs = memFs();
    const record: Record<string, Record<string, number>> = { a: { m1: 1 }, b: { m2: 2 }, c: { m3: 1 } };
    const live = mountsFromRecord(record);
    let listed = 0;
    const asked: string[] = [];
    const cluster = new SharedCluster(fs, '/shared/cluster', 'node-a', new SharedClock(), settings(), silentLogger);
    await cluster.start({
      mountedVolumes: () => { listed += 1; return live.mountedVolumes(); },
      count: (volume) => { asked.push(volume); return live.count(volume); },
    });
    started.push(cluster);
    expect((await fs.readdir('/shared/cluster/mounts/node-a')).sort()).toEqual(['a', 'b', 'c']);
    listed = 0;
    asked.length = 0;
    // An unmount whose marker unlink failed: the next heartbeat removes the marker, asking about c alone.
    delete record.c;
    await expect.poll(async () => (await fs.readdir('/shared/cluster/mounts/node-a')).sort()).toEqual(['a', 'b']);
    expect(listed).toBe(0);
    expect(new Set(asked)).toEqual(new Set(['a', 'b', 'c']));
    expect(cluster.usage('b').mountedOn).toBe('node-a');
    expect(cluster.usage('c').mountedOn).toBe('no node');
  });

  it('refuses to forget a node id that is not a plain name, and deletes nothing through it', async () => {
    const fs = memFs();
    const a = await nodeOn(fs, 'node-a');
    await fs.mkdir('/shared/volumes', { recursive: true });
    await fs.writeFile('/shared/volumes/seed.json', '{"precious":true}');
    // A planted record naming itself so that "<nodes>/<id>.json" is the volume record.
    await fs.writeFile('/shared/cluster/members/planted.json', validRecord('../../volumes/seed'));
    await sleep(200); // stale, as forget requires
    await expect(a.forget('../../volumes/seed')).rejects.toMatchObject({ code: ErrorCodes.INVALID_NAME });
    expect((await a.nodes()).map((n) => n.record.nodeId)).toEqual(['node-a']);
    expect(await fs.readFile('/shared/volumes/seed.json', 'utf8')).toBe('{"precious":true}');
  });

  it('lists a record without a docker field, and skips invalid ones without crashing', async () => {
    const fs = memFs();
    const a = await nodeOn(fs, 'node-a');
    const { docker: _omitted, ...noDocker } = JSON.parse(validRecord('old-node')) as Record<string, unknown>;
    await fs.writeFile('/shared/cluster/members/old-node.json', JSON.stringify(noDocker));
    await fs.writeFile('/shared/cluster/members/liar.json', validRecord('node-a'));
    await fs.writeFile('/shared/cluster/members/evil.json', validRecord('evil', { containers: { '../../x': [] } }));
    await fs.writeFile('/shared/cluster/members/torn.json', '{"format":2,');
    await fs.writeFile('/shared/cluster/members/notes.txt', 'hello');
    await fs.writeFile('/shared/outside.json', validRecord('linked'));
    await (fs as unknown as { symlink(t: string, p: string): Promise<void> }).symlink('/shared/outside.json', '/shared/cluster/members/linked.json');
    const nodes = await a.nodes();
    expect(nodes.map((n) => n.record.nodeId)).toEqual(['node-a', 'old-node']);
    expect(nodes[1]!.record.docker).toEqual({ reachable: false, error: 'not reported' });
    const invalid = a.invalidNodes();
    expect(invalid.map((i) => i.file).sort()).toEqual(['evil.json', 'liar.json', 'linked.json', 'notes.txt', 'torn.json']);
    expect(invalid.find((i) => i.file === 'linked.json')?.problem).toBe('a symbolic link, not a record');
    expect(invalid.find((i) => i.file === 'liar.json')?.problem).toMatch(/names node node-a, not liar/);
    expect(invalid.find((i) => i.file === 'evil.json')?.problem).toMatch(/at containers.*Invalid key/);
    // A skipped record is not believed: it cannot block a remove nor be forgotten by its claimed id.
    await a.assertRemovable('x', { force: false });
    // Named by its file, it is not forgotten either, but the answer says what to do instead of "unknown".
    await expect(a.forget('liar')).rejects.toMatchObject({
      code: ErrorCodes.INVALID_REQUEST,
      message: expect.stringMatching(/^the record of node liar \(liar\.json\) is not valid \(.*names node node-a, not liar.*\), so it is not forgotten: .*delete that file in the cluster directory \/shared\/cluster by hand$/),
    });
    expect((await fs.readdir('/shared/cluster/members')).sort()).toContain('liar.json');
    await expect(a.forget('nobody')).rejects.toMatchObject({ code: ErrorCodes.NODE_NOT_FOUND });
  });

  it('treats an unreadable lock file as held until it is as old as a lock lives, then breaks it', async () => {
    const fs = memFs();
    await fs.mkdir('/locks', { recursive: true });
    const clock = new SharedClock();
    await fs.writeFile('/locks/vol.lock', 'garbage');
    const impatient = new ClusterLocks(fs, '/locks', 'node-a', clock, { ttlMs: 60_000, waitMs: 150 });
    await expect(impatient.withLock('vol', async () => 'in')).rejects.toMatchObject({ code: ErrorCodes.BACKEND_UNAVAILABLE });
    expect(await fs.readFile('/locks/vol.lock', 'utf8')).toBe('garbage');
    const patient = new ClusterLocks(fs, '/locks', 'node-a', clock, { ttlMs: 100, waitMs: 2_000 });
    expect(await patient.withLock('vol', async () => 'in')).toBe('in');
    expect(await fs.readdir('/locks')).toEqual([]);
  });
});
