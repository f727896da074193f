/**
 * A restore on one node of a shared vfs store, seen from another (src/core/cluster/restore-claims.ts):
 * the restore's volume is listed everywhere from its create on, but no other node may mount it
 * until the restore finished, nor after a restore that failed or was killed left it half-written.
 */
import { mkdtemp, mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ContainerModule } from 'inversify';
import { afterEach, describe, expect, it } from 'vitest';
import { buildContainer } from '../../src/container.js';
import type { Backend } from '../../src/core/backend.js';
import type { Cluster } from '../../src/core/cluster/cluster.js';
import { RestoreJournal } from '../../src/core/backup/restore-journal.js';
import type { BackupService } from '../../src/core/backup/service-contract.js';
import { RestoreClaims } from '../../src/core/cluster/restore-claims.js';
import { ErrorCodes } from '../../src/core/errors.js';
import { asFsPort, LocalFirstFs } from '../../src/core/local-fs.js';
import { incarnationOf } from '../../src/core/mount-table.js';
import { TOKENS } from '../../src/core/tokens.js';
import type { VolumeManager } from '../../src/core/volume-manager.js';
import { memoryLogger } from '../helpers/memory-logger.js';

/**
 * A gate the test opens: detaching `volume` waits on it, so a restore holds there after its
 * writes and before it ends (detach runs under the node's own lock only, as the writes do).
 */
interface DetachGate {
  volume: string;
  reached: Promise<void>;
  open(): void;
}

function detachGate(volume: string): { gate: DetachGate; module: ContainerModule } {
  let reachedNow!: () => void;
  let openNow!: () => void;
  const reached = new Promise<void>((r) => { reachedNow = r; });
  const opened = new Promise<void>((r) => { openNow = r; });
  const gate = { volume, reached, open: () => openNow() };
  const module = new ContainerModule(({ onActivation }) => {
    onActivation<Backend>(TOKENS.Backend, (_ctx, inner) => new Proxy(inner, {
      get(target, prop) {
        const value: unknown = Reflect.get(target, prop, target);
        if (typeof value !== 'function') return value;
        const bound = (value as (...a: unknown[]) => unknown).bind(target);
        if (prop !== 'detach') return bound;
        return async (name: string, ...rest: unknown[]) => {
          if (name === gate.volume) {
            reachedNow();
            await opened;
          }
          return bound(name, ...rest);
        };
      },
    }));
  });
  return { gate, module };
}

describe('a restore on one node of a shared vfs store', () => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
    clusterOverrides = {};
  });

  /** `cluster` overrides the test's cluster settings (a node that writes its record once, a reader quick to call it stale). */
  let clusterOverrides: Record<string, { heartbeatMs?: number; staleAfterMs?: number }> = {};
  async function node(base: string, nodeId: string, ...modules: ContainerModule[]) {
    const log = memoryLogger();
    const container = buildContainer({
      backend: 'vfs', backendOptions: { 'vfs.path': join(base, 'store'), 'vfs.shared': 'true' }, root: join(base, `root-${nodeId}`),
      nodeId, onRemove: 'delete', logger: log, cluster: { heartbeatMs: 100, staleAfterMs: 5_000, ...clusterOverrides[nodeId] },
    }, ...modules);
    const manager = container.get<VolumeManager>(TOKENS.VolumeManager);
    await manager.init();
    let disposed = false;
    const dispose = async () => {
      if (!disposed) await manager.dispose();
      disposed = true;
    };
    cleanups.push(dispose);
    return { manager, log, container, dispose };
  }

  /** Two nodes on one store, node A holding a backup of volume `source` (one file, `data.txt`). */
  async function twoNodes(...modulesOfA: ContainerModule[]) {
    const base = await mkdtemp(join(tmpdir(), 'stowage-restore-share-'));
    cleanups.push(() => rm(base, { recursive: true, force: true }));
    await mkdir(join(base, 'store'));
    const a = await node(base, 'node-a', ...modulesOfA);
    const b = await node(base, 'node-b');
    await a.manager.create('source');
    const path = await a.manager.mount('source', 'writer');
    await writeFile(join(path, 'data.txt'), 'restored bytes');
    await a.manager.unmount('source', 'writer');
    const backup = await a.container.get<BackupService>(TOKENS.BackupService).createBackup('source', { dest: `vfs://${base}/repo` });
    const claims = join(base, 'store', '.stowage', 'cluster', 'restoring');
    return { base, a, b, url: backup.url, claims };
  }

  it('another node cannot mount the volume while the restore writes it, and can once it has finished', async () => {
    const { gate, module } = detachGate('copy');
    const { a, b, url, claims } = await twoNodes(module);
    const restoring = a.manager.create('copy', { backup: url });
    await gate.reached;
    // The volume is listed on B already, and its claim names node A.
    expect((await b.manager.list()).map((v) => v.name)).toContain('copy');
    expect(JSON.parse(await readFile(join(claims, 'copy.json'), 'utf8'))).toMatchObject({ volume: 'copy', node: 'node-a' });
    await expect(b.manager.mount('copy', 'container-1')).rejects.toMatchObject({
      code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/^volume copy is being restored from a backup on node node-a.*Mount it once the restore has finished/),
    });
    expect(b.manager.path('copy')).toBeUndefined();
    // Nor backed up or snapshotted there: it would be recorded complete with part of the data.
    // (On node A these wait behind the restore's unmount, which the gate holds.)
    await expect(b.container.get<BackupService>(TOKENS.BackupService).createBackup('copy', { dest: url.replace(/\?.*$/, '') })).rejects.toMatchObject({
      code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/^volume copy cannot be backed up or snapshotted now: volume copy is being restored from a backup on node node-a.*Back it up or snapshot it once the restore has finished/),
    });
    await expect(b.manager.createSnapshot('copy', 'early')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_IN_USE });
    gate.open();
    await restoring;
    expect(await readdir(claims)).toEqual([]);
    // Once restored, it backs up like any volume.
    await expect(b.container.get<BackupService>(TOKENS.BackupService).createBackup('copy', { dest: url.replace(/\?.*$/, '') }))
      .resolves.toMatchObject({ volume: 'copy', state: 'complete' });
    const path = await b.manager.mount('copy', 'container-1');
    expect(await readFile(join(path, 'data.txt'), 'utf8')).toBe('restored bytes');
    await b.manager.unmount('copy', 'container-1');
  });

  it('a restore killed on its node stays unmountable elsewhere until that node\'s next start removes the volume', async () => {
    const { base, a, b, url, claims } = await twoNodes();
    // What node A leaves when killed mid-restore: the volume, its marker, its claim.
    await a.manager.create('half');
    const incarnation = incarnationOf(await a.manager.get('half'));
    await new RestoreJournal(asFsPort(new LocalFirstFs()), join(base, 'root-node-a')).begin('half', url, incarnation);
    await new RestoreClaims(asFsPort(new LocalFirstFs()), join(base, 'store', '.stowage', 'cluster'), 'node-a').claim('half', incarnation);
    await a.dispose();
    await expect(b.manager.mount('half', 'container-1')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_IN_USE });
    await node(base, 'node-a');
    expect((await b.manager.list()).map((v) => v.name)).not.toContain('half');
    expect(await readdir(claims)).toEqual([]);
    // The name is free again, and a volume made under it later is an ordinary one.
    await b.manager.create('half');
    await b.manager.mount('half', 'container-1');
    await b.manager.unmount('half', 'container-1');
  });

  it('a claim that is not one (a symlink, garbage, another volume\'s) refuses the mount, naming the file, and is left alone', async () => {
    const { b, claims } = await twoNodes();
    await b.manager.create('target');
    await mkdir(claims, { recursive: true });
    const planted = [
      async () => symlink('/etc/passwd', join(claims, 'target.json')),
      async () => writeFile(join(claims, 'target.json'), '{"format":1,"volume":"target","node":"../x","incarnation":"i","startedAt":"t"}'),
      async () => writeFile(join(claims, 'target.json'), '{"format":1,"volume":"other","node":"node-a","incarnation":"i","startedAt":"t"}'),
    ];
    for (const plant of planted) {
      await rm(join(claims, 'target.json'), { force: true });
      await plant();
      await expect(b.manager.mount('target', 'container-1')).rejects.toMatchObject({
        code: ErrorCodes.STATE_CORRUPT, message: expect.stringContaining(join(claims, 'target.json')),
      });
      expect(await readdir(claims)).toEqual(['target.json']);
      expect(b.manager.path('target')).toBeUndefined();
    }
  });

  it('a claim left by an earlier volume of the name, or by this node\'s finished restore, is dropped at the next mount', async () => {
    const { base, a, b, claims } = await twoNodes();
    const claimsOf = (nodeId: string) => new RestoreClaims(asFsPort(new LocalFirstFs()), join(base, 'store', '.stowage', 'cluster'), nodeId);
    await a.manager.create('vol');
    await claimsOf('node-a').claim('vol', 'an-earlier-volume/node-a');
    await b.manager.mount('vol', 'container-1');
    expect(await readdir(claims)).toEqual([]);
    expect(b.log.lines.join('\n')).toMatch(/dropping the restore claim of vol by node node-a .*: it names an earlier volume of that name/);
    await b.manager.unmount('vol', 'container-1');
    await claimsOf('node-b').claim('vol', incarnationOf(await b.manager.get('vol')));
    await expect(a.manager.mount('vol', 'container-2')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_IN_USE });
    await b.manager.mount('vol', 'container-1');
    expect(await readdir(claims)).toEqual([]);
    await a.manager.mount('vol', 'container-2');
    await a.manager.unmount('vol', 'container-2');
    await b.manager.unmount('vol', 'container-1');
  });

  it('a node still holding mounts of an earlier volume of the name is refused too', async () => {
    const { gate, module } = detachGate('reused');
    // B writes its record once; A calls it stale 300 ms later (B paused, or cut off from the store).
    clusterOverrides = { 'node-b': { heartbeatMs: 60_000 }, 'node-a': { staleAfterMs: 300 } };
    const { a, b, url } = await twoNodes(module);
    await a.manager.create('reused');
    await b.manager.mount('reused', 'old-container');
    await new Promise((r) => setTimeout(r, 400));
    // Removed under the feet of B, silent too long (--force), then made again by a restore on A.
    await a.manager.remove('reused', { force: true });
    const restoring = a.manager.create('reused', { backup: url });
    await gate.reached;
    await expect(b.manager.mount('reused', 'new-container')).rejects.toMatchObject({
      code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/being restored from a backup on node node-a/),
    });
    gate.open();
    await restoring;
    const path = await b.manager.mount('reused', 'new-container');
    expect(await readFile(join(path, 'data.txt'), 'utf8')).toBe('restored bytes');
  });

  it('a failed restore that ends late leaves the claim of a restore another node started meanwhile', async () => {
    // Node A: once its failed restore has removed its volume, the restore's end waits for the test.
    let removed = false;
    let lateEnd!: () => void;
    let endReached!: () => void;
    const endAllowed = new Promise<void>((resolve) => { lateEnd = resolve; });
    const endWaiting = new Promise<void>((resolve) => { endReached = resolve; });
    const slowEnd = new ContainerModule(({ onActivation }) => {
      onActivation<Backend>(TOKENS.Backend, (_ctx, inner) => new Proxy(inner, {
        get(target, prop) {
          const value: unknown = Reflect.get(target, prop, target);
          if (typeof value !== 'function') return value;
          const bound = (value as (...a: unknown[]) => Promise<unknown>).bind(target);
          return prop === 'remove'
            ? async (...args: unknown[]) => { const out = await bound(...args); if (args[0] === 'xvol') removed = true; return out; }
            : bound;
        },
      }));
      onActivation<Cluster>(TOKENS.Cluster, (_ctx, inner) => new Proxy(inner, {
        get(target, prop) {
          const value: unknown = Reflect.get(target, prop, target);
          if (typeof value !== 'function') return value;
          const bound = (value as (...a: unknown[]) => Promise<unknown>).bind(target);
          return prop === 'withLock'
            ? async (...args: unknown[]) => {
              if (args[0] === 'xvol' && removed) {
                endReached();
                await endAllowed;
              }
              return bound(...args);
            }
            : bound;
        },
      }));
    });
    const base = await mkdtemp(join(tmpdir(), 'stowage-restore-share-'));
    cleanups.push(() => rm(base, { recursive: true, force: true }));
    await mkdir(join(base, 'store'));
    const a = await node(base, 'node-a', slowEnd);
    const { gate, module } = detachGate('xvol');
    const b = await node(base, 'node-b', module);
    await b.manager.create('source');
    await writeFile(join(await b.manager.mount('source', 'writer'), 'data.txt'), 'restored bytes');
    await b.manager.unmount('source', 'writer');
    const service = b.container.get<BackupService>(TOKENS.BackupService);
    const good = await service.createBackup('source', { dest: `vfs://${base}/good` });
    const broken = await service.createBackup('source', { dest: `vfs://${base}/broken` });
    await rm(join(base, 'broken', 'packs'), { recursive: true });

    const failing = a.manager.create('xvol', { backup: broken.url }).catch((err: unknown) => err);
    await endWaiting;
    const restoring = b.manager.create('xvol', { backup: good.url });
    await gate.reached;
    lateEnd();
    expect(await failing).toMatchObject({ message: expect.stringMatching(/is missing.*the volume was removed again/) });
    expect(JSON.parse(await readFile(join(base, 'store', '.stowage', 'cluster', 'restoring', 'xvol.json'), 'utf8'))).toMatchObject({ node: 'node-b' });
    await expect(a.manager.mount('xvol', 'container-1')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_IN_USE });
    gate.open();
    await restoring;
    expect(await readFile(join(await a.manager.mount('xvol', 'container-1'), 'data.txt'), 'utf8')).toBe('restored bytes');
  });

  it('a claims directory that is a symlink is neither written nor emptied through; one that is a plain file holds no claims', async () => {
    const { base, a, b, url, claims } = await twoNodes();
    const outside = join(base, 'outside');
    await mkdir(outside);
    await writeFile(join(outside, 'victim.json'), 'not stowage\'s');
    await a.manager.create('victim');
    await symlink(outside, claims);
    // A file seen through it is no claim that can be trusted: the mount is refused, naming the directory.
    await expect(b.manager.mount('victim', 'container-1')).rejects.toMatchObject({
      code: ErrorCodes.STATE_CORRUPT, message: expect.stringMatching(/restoring is a symbolic link/),
    });
    // A remove drops the name's claim, but never through the link.
    await expect(a.manager.remove('victim')).resolves.toMatchObject({ name: 'victim' });
    expect(a.log.lines.join('\n')).toMatch(/volume victim was removed, but clearing its restore claim failed .*symbolic link/);
    expect(await readFile(join(outside, 'victim.json'), 'utf8')).toBe('not stowage\'s');
    await expect(a.manager.create('copy', { backup: url })).rejects.toMatchObject({
      code: ErrorCodes.STATE_CORRUPT, message: expect.stringMatching(/restoring is a symbolic link, where restores claim their volumes/),
    });
    expect((await a.manager.list()).map((v) => v.name)).not.toContain('copy');
    expect(await readdir(outside)).toEqual(['victim.json']);
    await rm(claims);
    await writeFile(claims, 'stray');
    await a.manager.create('plain');
    await b.manager.mount('plain', 'container-1');
    await b.manager.unmount('plain', 'container-1');
  });
});
