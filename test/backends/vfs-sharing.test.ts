import { mkdtemp, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { buildContainer } from '../../src/container.js';
import { ExecaCommandRunner } from '../../src/core/command-runner.js';
import { VfsBackend } from '../../src/backends/vfs/vfs-backend.js';
import { parseVfsOptions } from '../../src/backends/vfs/vfs-options.js';
import { memFs } from '../helpers/memfs-stack.js';
import { ErrorCodes } from '../../src/core/errors.js';
import { TOKENS } from '../../src/core/tokens.js';
import type { VolumeManager } from '../../src/core/volume-manager.js';
import { memoryLogger } from '../helpers/memory-logger.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The Convoy command line on two nodes (`--driver-opts vfs.path=/mnt/shared`, no vfs.shared):
 * both daemons on one local directory, as two nodes on one NFS export would be.
 */
describe('vfs store used by two nodes without vfs.shared', () => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function node(store: string, base: string, nodeId: string, opts: Record<string, string> = {}) {
    const log = memoryLogger();
    const container = buildContainer({
      backend: 'vfs', backendOptions: { 'vfs.path': store, ...opts }, root: join(base, `root-${nodeId}`),
      nodeId, onRemove: 'delete', logger: log, cluster: { heartbeatMs: 100, staleAfterMs: 5_000 },
    });
    const manager = container.get<VolumeManager>(TOKENS.VolumeManager);
    await manager.init();
    cleanups.push(() => manager.dispose());
    return { manager, log };
  }

  async function tempBase(): Promise<string> {
    const base = await mkdtemp(join(tmpdir(), 'stowage-share-'));
    cleanups.push(() => rm(base, { recursive: true, force: true }));
    return base;
  }

  it('a volume mounted on B cannot be removed on A, whatever order the nodes started in', async () => {
    const base = await tempBase();
    const store = join(base, 'store');
    const a = await node(store, base, 'node-a');
    const b = await node(store, base, 'node-b');
    await a.manager.create('shared-data');
    const path = await b.manager.mount('shared-data', 'container-1');
    await writeFile(join(path, 'db'), 'live');
    // No wait: B's mount marker exists before its mount answers.
    const err = await a.manager.remove('shared-data').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/still used on node-b: mounted/) });
    expect(await readFile(join(path, 'db'), 'utf8')).toBe('live');
    await b.manager.unmount('shared-data', 'container-1');
    await a.manager.remove('shared-data');
    expect(await b.manager.list()).toEqual([]);
    // B started second and saw A's record: it reports the store as global and says why.
    expect(b.manager.scope).toBe('global');
    expect(b.log.lines.join('\n')).toMatch(/is shared \(scope global\): the store holds records of other nodes: node-a/);
  });

  it('vfs.shared=false refuses to start on a store holding another node\'s record, naming it and the fix', async () => {
    const base = await tempBase();
    const store = join(base, 'store');
    await node(store, base, 'node-a');
    const err = await node(store, base, 'node-b', { 'vfs.shared': 'false' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCodes.BACKEND_UNAVAILABLE });
    expect((err as Error).message).toMatch(/vfs.shared=false, but the store at .* is used by more than this node \(node-b\): the store holds records of other nodes: node-a/);
    expect((err as Error).message).toMatch(/vfs.shared=true/);
  });

  it('vfs.shared=false refuses a store holding volumes another node created', async () => {
    const base = await tempBase();
    const store = join(base, 'store');
    const a = await node(store, base, 'node-a');
    await a.manager.create('from-a');
    await a.manager.dispose();
    cleanups.pop();
    await rm(join(store, '.stowage', 'cluster', 'members', 'node-a.json'));
    await expect(node(store, base, 'node-b', { 'vfs.shared': 'false' }))
      .rejects.toThrow(/volumes created by other nodes: node-a/);
  });

  it('a store only this node uses stays local, with protection on', async () => {
    const base = await tempBase();
    const store = join(base, 'store');
    await mkdir(store);
    const a = await node(store, base, 'node-a', { 'vfs.shared': 'false' });
    expect(a.manager.scope).toBe('local');
    expect(a.log.lines.join('\n')).toMatch(/shows no other node \(scope local\); cluster protection stays on/);
  });

  it('a daemon whose store was deleted and made again by another node writes nothing into the new store', async () => {
    const base = await tempBase();
    const store = join(base, 'store');
    const a = await node(store, base, 'node-a');
    await a.manager.create('kept');
    await rm(store, { recursive: true });
    await mkdir(store);
    await node(store, base, 'node-b');
    const cluster = join(store, '.stowage', 'cluster');
    // Several of A's heartbeats (every 100 ms), a container event's publish, and a mount.
    await sleep(700);
    await expect(a.manager.mount('kept', 'c1')).rejects.toMatchObject({ code: ErrorCodes.BACKEND_UNAVAILABLE });
    await sleep(300);
    expect(await readdir(join(cluster, 'members'))).toEqual(['node-b.json']);
    expect(await readdir(join(cluster, 'mounts'))).toEqual(['node-b']);
    expect(a.log.lines.join('\n')).toMatch(/heartbeat of node node-a failed: .* now holds stowage store [0-9a-f]+, not store [0-9a-f]+ that this daemon started on/);
  });
});



describe('vfs store on a network filesystem', () => {
  async function onNfs(shared?: string) {
    const fs = memFs();
    // memfs stands in for the host: its /proc/self/mountinfo says /mnt/nfs is an NFS mount.
    await fs.mkdir('/proc/self', { recursive: true });
    await fs.writeFile('/proc/self/mountinfo', await readFile(join(import.meta.dirname, '../fixtures/mountinfo/nodes.txt'), 'utf8'));
    await fs.mkdir('/mnt/nfs/volumes', { recursive: true });
    const log = memoryLogger();
    const backend = new VfsBackend({ nodeId: 'node-a', root: '/state', fs, runner: new ExecaCommandRunner(), log },
      parseVfsOptions({ 'vfs.path': '/mnt/nfs/volumes', ...(shared ? { 'vfs.shared': shared } : {}) }, '/state'));
    return { backend, log };
  }

  it('auto reports global scope for a store on nfs4 and logs why', async () => {
    const { backend, log } = await onNfs();
    await backend.init();
    expect(backend.capabilities.scope).toBe('global');
    expect(log.lines.join('\n')).toMatch(/is shared \(scope global\): \/mnt\/nfs is a nfs4 mount \(srv:\/export\)/);
    expect((await backend.describe()).sharedEvidence).toMatch(/nfs4/);
  });

  it('vfs.shared=false refuses to start on nfs4, naming the mount', async () => {
    const { backend } = await onNfs('false');
    await expect(backend.init()).rejects.toThrow(/vfs.shared=false, but the store at \/mnt\/nfs\/volumes .*\/mnt\/nfs is a nfs4 mount/);
  });
});
