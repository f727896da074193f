/**
 * Two nodes (two VolumeManagers with their own roots) on one shared vfs directory on the real
 * file system: a mount on one node racing a remove on the other must never both succeed.
 */
import { readlinkSync } from 'node:fs';
import { access, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildContainer } from '../../src/container.js';
import { ErrorCodes, isStowageError } from '../../src/core/errors.js';
import { asFsPort, LocalFirstFs } from '../../src/core/local-fs.js';
import { silentLogger } from '../../src/core/logger.js';
import { TOKENS } from '../../src/core/tokens.js';
import type { VolumeManager } from '../../src/core/volume-manager.js';
import { makeTempDir, removeTempDir } from '../helpers/daemon-process.js';

/**
 * The daemon's own file system port, which a test can stop right after a readdir of `dir`
 * returns (a remove there has read the node's markers and not yet removed anything), and which
 * keeps the paths it unlinked.
 */
class PausingFs extends LocalFirstFs {
  private gate?: { dir: string; reached: () => void; release: Promise<void> };
  readonly unlinked: string[] = [];

  constructor() {
    super();
    const unlink = this.unlink;
    this.unlink = async (path) => {
      this.unlinked.push(String(path));
      return unlink(path);
    };
    const readdir = this.readdir;
    this.readdir = async (path, options) => {
      const names = await readdir(path, options);
      const gate = this.gate;
      // A node's marker directory is listed through its descriptor (/proc/self/fd/N).
      if (gate && (path === gate.dir || (String(path).startsWith('/proc/self/fd/') && readlinkSync(path) === gate.dir))) {
        this.gate = undefined;
        gate.reached();
        await gate.release;
      }
      return names;
    };
  }

  /** Resolves when the next readdir of `dir` has returned its names and waits for `release`. */
  pauseAfterReaddir(dir: string, release: Promise<void>): Promise<void> {
    return new Promise((reached) => { this.gate = { dir, reached, release }; });
  }
}

async function nodeManager(dir: string, nodeId: string, fs?: LocalFirstFs): Promise<VolumeManager> {
  const manager = buildContainer({
    ...(fs ? { fs: asFsPort(fs) } : {}),
    backend: 'vfs',
    backendOptions: { 'vfs.path': join(dir, 'shared'), 'vfs.shared': 'true' },
    root: join(dir, nodeId),
    nodeId,
    onRemove: 'delete',
    logger: silentLogger,
    engine: { socket: undefined }, cluster: { heartbeatMs: 60_000 },
  }).get<VolumeManager>(TOKENS.VolumeManager);
  await manager.init();
  return manager;
}

describe('mount on one node against remove on another', { timeout: 60_000 }, () => {
  let dir: string;
  let a: VolumeManager;
  let b: VolumeManager;
  const fsOfA = new PausingFs();

  beforeAll(async () => {
    dir = await makeTempDir('stowage-race-');
    await mkdir(join(dir, 'shared'));
    a = await nodeManager(dir, 'node-a', fsOfA);
    b = await nodeManager(dir, 'node-b');
  });
  afterAll(async () => {
    await a?.dispose();
    await b?.dispose();
    await removeTempDir(dir);
  });

  it('either refuses the remove or fails the mount with not-found, never both succeed (40 tries)', async () => {
    const outcomes = { removed: 0, mounted: 0 };
    for (let i = 0; i < 40; i += 1) {
      const name = `race-${i}`;
      await a.create(name);
      // Stagger the start a little so both orders and the overlap are all exercised.
      const [removed, mounted] = await Promise.allSettled([
        new Promise((r) => setTimeout(r, i % 4)).then(() => a.remove(name)),
        new Promise((r) => setTimeout(r, (i + 2) % 4)).then(() => b.mount(name, `m-${i}`)),
      ]);
      expect(removed.status === 'fulfilled' && mounted.status === 'fulfilled', `try ${i}: both succeeded`).toBe(false);
      if (removed.status === 'fulfilled') {
        outcomes.removed += 1;
        expect(isStowageError((mounted as PromiseRejectedResult).reason, ErrorCodes.VOLUME_NOT_FOUND)).toBe(true);
        expect(b.mountRecords().filter((r) => r.volume === name)).toEqual([]);
      } else {
        outcomes.mounted += 1;
        expect((removed.reason as Error).message).toMatch(/still used on node-b: mounted/);
        await b.unmount(name, `m-${i}`);
        // The last unmount removes the node's mount marker before it returns.
        await a.remove(name);
      }
    }
    // Both orders happened, or the test proved nothing about the race.
    expect(outcomes.removed).toBeGreaterThan(0);
    expect(outcomes.mounted).toBeGreaterThan(0);
  });

  it('a mount while nothing holds the name\'s lock takes none: its marker is all it writes to the cluster directory', async () => {
    const name = 'quick-mount';
    const cluster = join(dir, 'shared', '.stowage', 'cluster');
    await a.create(name);
    const before = fsOfA.unlinked.length;
    const path = await a.mount(name, 'quick');
    expect(path).toBe(a.path(name));
    // A lock taken and released is an unlink in locks/; the mount made none.
    expect(fsOfA.unlinked.slice(before).filter((p) => p.startsWith(join(cluster, 'locks')))).toEqual([]);
    expect(await readdir(join(cluster, 'mounts', 'node-a'))).toContain(name);
    // Another node's remove is refused from the moment the mount answered.
    await expect(b.remove(name)).rejects.toThrow(/still used on node-a: mounted/);
    await a.unmount(name, 'quick');
    expect(await readdir(join(cluster, 'mounts', 'node-a'))).not.toContain(name);
    await b.remove(name);
  });

  it('a mount that comes while a remove elsewhere has read the markers, and not yet removed, waits for it and finds no volume', async () => {
    const name = 'paused-remove';
    const markersOfB = join(dir, 'shared', '.stowage', 'cluster', 'mounts', 'node-b');
    await a.create(name);
    let release!: () => void;
    const paused = fsOfA.pauseAfterReaddir(markersOfB, new Promise<void>((resolve) => { release = resolve; }));
    const removed = a.remove(name);
    await paused;
    // Node a has seen no marker of node b; node b now mounts, with a's remove half done.
    const mounted = b.mount(name, 'late');
    mounted.catch(() => undefined);
    // The mount made its marker before anything else: a remove starting now would be refused.
    for (let tries = 0; !(await access(join(markersOfB, name)).then(() => true, () => false)); tries += 1) {
      expect(tries, 'node b never made its mount marker').toBeLessThan(1000);
      await new Promise((r) => setTimeout(r, 5));
    }
    release();
    await expect(removed).resolves.toMatchObject({ name });
    const failure = await mounted.then(() => undefined, (err: unknown) => err);
    // Without the lock look, the mount answers a path to a volume the remove then deletes.
    expect(isStowageError(failure, ErrorCodes.VOLUME_NOT_FOUND), `the mount answered ${String(failure)}`).toBe(true);
    expect(b.mountRecords().filter((r) => r.volume === name)).toEqual([]);
    // The failed mount took its marker back: nothing pins the name on node b.
    expect(await readdir(markersOfB)).not.toContain(name);
    await a.create(name);
    await a.remove(name);
  });
});
