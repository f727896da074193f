/**
 * Container references across nodes when a node's Docker engine stops answering, or when the
 * storage answers ENOENT for another node's record while it is being replaced: neither may let
 * a remove through that a stopped container elsewhere still references.
 */
import { spawnSync } from 'node:child_process';
import * as realFs from 'node:fs/promises';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SharedClock } from '../../src/core/clock.js';
import { DEFAULT_CLUSTER_SETTINGS } from '../../src/core/cluster/cluster.js';
import { mountsFromRecord } from '../helpers/local-mounts.js';
import { SharedCluster } from '../../src/core/cluster/shared-cluster.js';
import type { ContainerReferences, ContainerScan } from '../../src/core/container-references.js';
import { ErrorCodes } from '../../src/core/errors.js';
import type { FsPort } from '../../src/core/fs-port.js';
import { silentLogger, type Logger } from '../../src/core/logger.js';
import { memoryLogger } from '../helpers/memory-logger.js';
import { memFs } from '../helpers/memfs-stack.js';

/** An engine whose answer the test sets; `down` makes every scan fail as an unreachable engine's does. */
class ScriptedEngine implements ContainerReferences {
  readonly configured = true;
  down = false;
  byVolume: ContainerScan['byVolume'] = {};
  async scan(): Promise<ContainerScan> {
    return this.down
      ? { reachable: false, error: 'connect ECONNREFUSED /run/docker.sock', byVolume: {} }
      : { reachable: true, byVolume: structuredClone(this.byVolume) };
  }
  onEvent(): void {}
  stop(): void {}
}

/** An engine whose scans, once `hang` is set, wait until `release()`; they then answer with `byVolume` as it is at that moment. */
class HangingEngine extends ScriptedEngine {
  hang = false;
  private held: Array<() => void> = [];
  get waiting(): number {
    return this.held.length;
  }
  override async scan(): Promise<ContainerScan> {
    if (this.hang) await new Promise<void>((resolve) => this.held.push(resolve));
    return super.scan();
  }
  release(): void {
    this.hang = false;
    for (const resolve of this.held.splice(0)) resolve();
  }
}

const settings = { ...DEFAULT_CLUSTER_SETTINGS, heartbeatMs: 30, staleAfterMs: 5_000, version: 'test' };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const enoent = () => Object.assign(new Error('ENOENT: no such file or directory'), { code: 'ENOENT' });

describe('container references published by other nodes', () => {
  const started: SharedCluster[] = [];
  afterEach(async () => {
    await Promise.all(started.splice(0).map((c) => c.stop()));
  });

  async function node(fs: FsPort, id: string, engine?: ContainerReferences, heartbeatMs = settings.heartbeatMs, log: Logger = silentLogger): Promise<SharedCluster> {
    const cluster = new SharedCluster(fs, '/shared/cluster', id, new SharedClock(), { ...settings, heartbeatMs }, log, engine);
    await cluster.start(mountsFromRecord({}));
    started.push(cluster);
    return cluster;
  }

  it('keeps the last list while the engine does not answer, so a stopped container still blocks a remove', async () => {
    const fs = memFs();
    const engine = new ScriptedEngine();
    engine.byVolume = { vol: [{ id: 'c0ffee00c0ffee00', name: 'c-two', state: 'exited' }] };
    await node(fs, 'n2', engine);
    const n1 = await node(fs, 'n1');
    engine.down = true;
    await sleep(150); // several heartbeats of n2, each with its engine down
    const n2View = (await n1.nodes()).find((n) => n.record.nodeId === 'n2')!;
    expect(n2View.record.docker).toMatchObject({ configured: true, reachable: false, error: expect.stringMatching(/ECONNREFUSED/) });
    expect(n2View.record.docker.listedAt).toMatch(/^\d{4}-\d\d-\d\dT/);
    await expect(n1.assertRemovable('vol', { force: false })).rejects.toMatchObject({
      code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/still used on n2: container c-two \(c0ffee00c0ff, exited\)/),
    });
    await n1.assertRemovable('other', { force: false });
    // Once the engine answers again, its answer is what counts.
    engine.byVolume = {};
    engine.down = false;
    await sleep(150);
    await n1.assertRemovable('vol', { force: false });
  });

  it('refuses any remove while a node\'s engine has never answered, and says what lets it through', async () => {
    const fs = memFs();
    const engine = new ScriptedEngine();
    engine.down = true;
    const log = memoryLogger();
    await node(fs, 'n2', engine, settings.heartbeatMs, log);
    const n1 = await node(fs, 'n1');
    expect(log.lines.join('\n')).toMatch(/the Docker engine does not answer \(connect ECONNREFUSED .*\): until it does, .* every volume remove in the cluster is refused/);
    const refusal = await n1.assertRemovable('vol', { force: false }).catch((err: unknown) => err);
    expect(refusal).toMatchObject({
      code: ErrorCodes.VOLUME_IN_USE,
      message: expect.stringMatching(/cannot tell whether containers use volume vol: .* on n2: connect ECONNREFUSED.*Start Docker there/),
      remedies: [{ action: 'force-remove', volume: 'vol' }],
    });
    await n1.assertRemovable('vol', { force: true });
    // The node's own remove is refused the same way: it cannot see its own containers either.
    const n2 = started[0]!;
    await expect(n2.assertRemovable('vol', { force: false })).rejects.toMatchObject({ message: expect.stringMatching(/on n2 \(this node\)/) });
    engine.down = false;
    await sleep(150);
    await n1.assertRemovable('vol', { force: false });
    await n2.assertRemovable('vol', { force: false });
    expect(log.lines.filter((l) => /does not answer/.test(l))).toHaveLength(1);
    expect(log.lines.filter((l) => /the Docker engine answers now: other nodes can remove volumes again/.test(l))).toHaveLength(1);
  });

  it('counts a node without an engine, by choice, as using nothing but its mounts', async () => {
    const fs = memFs();
    await node(fs, 'n2');
    const n1 = await node(fs, 'n1');
    expect((await n1.nodes()).find((n) => n.record.nodeId === 'n2')!.record.docker).toMatchObject({ configured: false });
    await n1.assertRemovable('vol', { force: false });
  });

  it('drops an answer to an older scan that arrives after a newer one, so a just-created container stays published', async () => {
    const fs = memFs();
    /** Each scan answers what was true when it started, but only when the test releases it. */
    const held: Array<{ answer: ContainerScan; release: () => void }> = [];
    let now: ContainerScan['byVolume'] = {};
    let holding = false;
    const engine: ContainerReferences = {
      configured: true,
      scan: async () => {
        const answer: ContainerScan = { reachable: true, byVolume: structuredClone(now) };
        if (!holding) return answer;
        return new Promise<ContainerScan>((resolve) => held.push({ answer, release: () => resolve(answer) }));
      },
      onEvent: () => undefined,
      stop: () => undefined,
    };
    // No heartbeat during the test: only the two scans below run, and nothing scans afresh after.
    const n2 = await node(fs, 'n2', engine, 600_000);
    const n1 = await node(fs, 'n1');
    holding = true;
    const before = n2.assertRemovable('elsewhere', { force: false }); // its scan sees no container
    now = { vol: [{ id: 'abcdefabcdef0000', name: 'late', state: 'created' }] };
    const after = n2.assertRemovable('elsewhere', { force: false }); // its scan sees the new one
    await sleep(5);
    expect(held).toHaveLength(2);
    const [older, newer] = held;
    newer!.release();
    await after;
    older!.release();
    await before;
    n2.changed(); // publishes what n2 holds, without scanning
    await sleep(400);
    const published = (await n1.nodes()).find((n) => n.record.nodeId === 'n2')!.record.containers;
    expect(published).toEqual({ vol: [{ id: 'abcdefabcdef0000', name: 'late', state: 'created' }] });
    await expect(n1.assertRemovable('vol', { force: false })).rejects.toMatchObject({
      message: expect.stringMatching(/still used on n2: container late/),
    });
  });

  it('asks the engine again on remove only when it reported a container change, lost its stream, or a second has passed', async () => {
    /** An engine with an event stream: `mark` is what its change mark reads (undefined: no stream). */
    class MarkedEngine extends ScriptedEngine {
      mark: number | undefined = 1;
      scans = 0;
      override async scan(): Promise<ContainerScan> {
        this.scans += 1;
        return super.scan();
      }
      changeMark(): number | undefined {
        return this.mark;
      }
    }
    const engine = new MarkedEngine();
    // No heartbeat during the test: only removes scan.
    const n1 = await node(memFs(), 'n1', engine, 600_000);
    const atStart = engine.scans;
    for (let i = 0; i < 3; i++) await n1.assertRemovable(`v${i}`, { force: false });
    expect(engine.scans).toBe(atStart);
    // A container made since (its event changes the mark) is seen at once.
    engine.byVolume = { vol: [{ id: 'abcdefabcdef0000', name: 'fresh', state: 'created' }] };
    engine.mark = 2;
    await expect(n1.assertRemovable('vol', { force: false })).rejects.toMatchObject({
      message: expect.stringMatching(/still used on n1 \(this node\): container fresh/),
    });
    expect(engine.scans).toBe(atStart + 1);
    // Without a stream nothing says the engine's answer still holds: every remove asks.
    engine.mark = undefined;
    engine.byVolume = {};
    await n1.assertRemovable('vol', { force: false });
    await n1.assertRemovable('vol', { force: false });
    expect(engine.scans).toBe(atStart + 3);
    // Back with a stream: one scan, then its answer serves until it is a second old.
    engine.mark = 3;
    await n1.assertRemovable('vol', { force: false });
    await n1.assertRemovable('vol', { force: false });
    expect(engine.scans).toBe(atStart + 4);
    await sleep(1_100);
    engine.byVolume = { vol: [{ id: 'abcdefabcdef0001', name: 'unreported', state: 'created' }] };
    await expect(n1.assertRemovable('vol', { force: false })).rejects.toMatchObject({
      message: expect.stringMatching(/container unreported/),
    });
    expect(engine.scans).toBe(atStart + 5);
  });

  it('retries a record whose read answers ENOENT after its open worked (a replaced file), and still counts its containers', async () => {
    const fs = memFs();
    const engine = new ScriptedEngine();
    engine.byVolume = { vol: [{ id: 'feedfacefeedface', name: 'c-two', state: 'exited' }] };
    await node(fs, 'n2', engine);
    let misses = 0;
    const replacedUnderneath: FsPort = {
      ...fs,
      open: (async (...args: Parameters<FsPort['open']>) => {
        const handle = await fs.open(...args);
        if (!String(args[0]).endsWith('/members/n2.json') || misses >= 2) return handle;
        misses += 1;
        const failing = misses === 1 ? 'stat' : 'readFile';
        return new Proxy(handle, {
          get: (target, key, receiver) => key === failing
            ? async () => { throw enoent(); }
            : Reflect.get(target, key, receiver) as unknown,
        });
      }) as FsPort['open'],
    };
    const n1 = await node(replacedUnderneath, 'n1');
    misses = 0;
    await expect(n1.assertRemovable('vol', { force: false })).rejects.toMatchObject({
      message: expect.stringMatching(/still used on n2: container c-two/),
    });
    expect(misses).toBe(2);
  });

  it('keeps sending heartbeats while its engine hangs, with the last list, and publishes the late answer', async () => {
    const fs = memFs();
    const engine = new HangingEngine();
    engine.byVolume = { vol: [{ id: 'c0ffee00c0ffee00', name: 'c-two', state: 'exited' }] };
    await node(fs, 'n2', engine);
    const n1 = await node(fs, 'n1');
    const n2View = async () => (await n1.nodes()).find((n) => n.record.nodeId === 'n2')!;
    engine.hang = true;
    await expect.poll(() => engine.waiting, { timeout: 2_000 }).toBeGreaterThan(0);
    const hungAt = (await n2View()).lastHeartbeat;
    // Heartbeats go on while every scan hangs: the record is rewritten, still naming c-two.
    await expect.poll(async () => (await n2View()).lastHeartbeat, { timeout: 2_000 }).not.toBe(hungAt);
    expect((await n2View()).record.containers).toEqual(engine.byVolume);
    await expect(n1.assertRemovable('vol', { force: false })).rejects.toMatchObject({ code: ErrorCodes.VOLUME_IN_USE });
    // The hung scans answer at last (the container is gone by then): that answer is published.
    engine.byVolume = {};
    engine.release();
    await expect.poll(async () => (await n2View()).record.containers, { timeout: 2_000 }).toEqual({});
    await n1.assertRemovable('vol', { force: false });
  });
});

describe('a FIFO planted in the cluster directory', () => {
  it('is reported as invalid, and neither a refresh nor the layout-1 migration waits on it', { timeout: 10_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'stowage-cluster-fifo-'));
    const cluster = new SharedCluster(realFs as unknown as FsPort, join(dir, 'cluster'), 'n1', new SharedClock(), settings, silentLogger);
    try {
      // A layout-1 directory whose record is a FIFO: opening it plainly blocks until a writer comes.
      await mkdir(join(dir, 'cluster', 'nodes'), { recursive: true });
      expect(spawnSync('mkfifo', [join(dir, 'cluster', 'nodes', 'old.json')]).status).toBe(0);
      await cluster.start(mountsFromRecord({}));
      await mkdir(join(dir, 'cluster', 'members'), { recursive: true });
      expect(spawnSync('mkfifo', [join(dir, 'cluster', 'members', 'fifo.json')]).status).toBe(0);
      expect((await cluster.nodes()).map((n) => n.record.nodeId)).toEqual(['n1']);
      expect(cluster.invalidNodes()).toEqual([{ file: 'fifo.json', problem: 'not a regular file' }]);
      await cluster.assertRemovable('vol', { force: false });
      if (process.getuid?.() === 0) {
        // A device: its driver would run here if it were opened (major 240 has none: ENXIO).
        expect(spawnSync('mknod', [join(dir, 'cluster', 'members', 'dev.json'), 'c', '240', '0']).status).toBe(0);
        expect((await cluster.nodes()).map((n) => n.record.nodeId)).toEqual(['n1']);
        expect(cluster.invalidNodes()).toContainEqual({ file: 'dev.json', problem: 'not a regular file' });
      }
    } finally {
      await cluster.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
