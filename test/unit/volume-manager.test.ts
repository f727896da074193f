import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, StowageError } from '../../src/core/errors.js';
import type { FsPort } from '../../src/core/fs-port.js';
import { ContainerModule } from 'inversify';
import { memContainer, memFs, memStack, simulateCrash } from '../helpers/memfs-stack.js';
import { LocalCluster } from '../../src/core/cluster/cluster.js';
import { TOKENS } from '../../src/core/tokens.js';
import type { VolumeManager } from '../../src/core/volume-manager.js';
import { readMountRecords } from '../helpers/mount-records.js';
import { createRequest } from '../../src/core/create-request.js';

describe('VolumeManager', () => {
  describe('create', () => {
    it('validates the name before the backend sees it', async () => {
      const { manager, backend } = await memStack();
      await expect(manager.create('../escape')).rejects.toMatchObject({ code: ErrorCodes.INVALID_NAME });
      await expect(manager.create('ok-name', { colour: 'red' })).rejects.toMatchObject({ code: ErrorCodes.INVALID_OPTION });
      expect(backend.count('create')).toBe(0);
      expect(await manager.list()).toEqual([]);
    });

    it('is idempotent for identical options and a conflict for different ones', async () => {
      const { manager, backend } = await memStack();
      const first = await manager.create('db', { size: '1G' });
      expect(first.created).toBe(true);
      const again = await manager.create('db', { size: '1024M' });
      expect(again.created).toBe(false);
      expect(again.volume.options.size).toBe(2 ** 30);
      await expect(manager.create('db', { size: '2G' })).rejects.toThrow(/already exists with different options \(size=1GiB\)/);
      // The backend refused the later two: the first volume is the one kept.
      expect(backend.count('create')).toBe(3);
      expect(await manager.get('db')).toMatchObject({ createdAt: first.volume.createdAt, options: { size: 2 ** 30 } });
      expect((await manager.list()).map((v) => v.name)).toEqual(['db']);
    });

    it('serialises concurrent creates of one name: one volume, all callers succeed', async () => {
      const { manager, backend } = await memStack();
      const results = await Promise.all(Array.from({ length: 20 }, () => manager.create('race', { size: '10M' })));
      expect(results.filter((r) => r.created)).toHaveLength(1);
      // Every caller was answered with the one volume made.
      expect(new Set(results.map((r) => r.volume.createdAt)).size).toBe(1);
      expect((await manager.list()).map((v) => v.name)).toEqual(['race']);
    });
  });

  describe('mount reference counting', () => {
    it('attaches on the first mount, detaches only after the last unmount of every ID', async () => {
      const { manager, backend } = await memStack();
      await manager.create('shared');
      const p1 = await manager.mount('shared', 'id-1');
      const p2 = await manager.mount('shared', 'id-2');
      await manager.mount('shared', 'id-1'); // docker cp mounts the same ID again
      expect(p2).toBe(p1);
      expect((await manager.get('shared')).mountCount).toBe(3);
      expect(manager.path('shared')).toBe(p1);
      await manager.unmount('shared', 'id-1');
      await manager.unmount('shared', 'id-2');
      expect(backend.count('detach')).toBe(0);
      expect((await manager.get('shared')).status.mounts).toBe('1');
      await manager.unmount('shared', 'id-1');
      expect(backend.count('detach')).toBe(1);
      expect(manager.path('shared')).toBeUndefined();
    });

    it('ignores an Unmount for an ID it never mounted', async () => {
      const { manager, backend } = await memStack();
      await manager.create('vol');
      await manager.mount('vol', 'real');
      await manager.unmount('vol', 'unknown');
      expect((await manager.get('vol')).mountCount).toBe(1);
      expect(backend.count('detach')).toBe(0);
    });

    it('keeps counts exact under concurrent mounts and unmounts of one volume', async () => {
      const { manager, backend } = await memStack();
      await manager.create('busy');
      const ids = Array.from({ length: 25 }, (_, i) => `m${i}`);
      await Promise.all(ids.map((id) => manager.mount('busy', id)));
      expect((await manager.get('busy')).mountCount).toBe(25);
      await Promise.all(ids.map((id) => manager.unmount('busy', id)));
      expect((await manager.get('busy')).mountCount).toBe(0);
      expect(backend.count('detach')).toBe(1);
    });

    it('keeps the mount when detach fails so Docker can retry the unmount', async () => {
      const { manager, backend } = await memStack();
      await manager.create('sticky');
      await manager.mount('sticky', 'only');
      backend.failDetach = new StowageError(ErrorCodes.BACKEND_COMMAND, 'umount: target is busy');
      await expect(manager.unmount('sticky', 'only')).rejects.toThrow(/target is busy/);
      expect((await manager.get('sticky')).mountCount).toBe(1);
      backend.failDetach = undefined;
      await manager.unmount('sticky', 'only');
      expect((await manager.get('sticky')).mountCount).toBe(0);
    });

    it('rejects a mount without an ID or of an unknown volume', async () => {
      const { manager } = await memStack();
      await manager.create('vol');
      await expect(manager.mount('vol', '')).rejects.toMatchObject({ code: ErrorCodes.INVALID_REQUEST });
      await expect(manager.mount('nope', 'x')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_NOT_FOUND });
    });
  });

  describe('remove and the delete policy', () => {
    it('refuses while mounted on this node, naming the node', async () => {
      const { manager } = await memStack({ nodeId: 'node-7' });
      await manager.create('inuse');
      await manager.mount('inuse', 'c1');
      await expect(manager.remove('inuse')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/node node-7/) });
      expect((await manager.list()).map((v) => v.name)).toEqual(['inuse']);
    });

    it('deletes data by default', async () => {
      const { manager, fs, vfs } = await memStack();
      await manager.create('gone');
      const path = await manager.mount('gone', 'c');
      await fs.writeFile(join(path, 'f'), 'x');
      await manager.unmount('gone', 'c');
      expect(await manager.remove('gone')).toEqual({ name: 'gone', retainedAt: undefined });
      await vfs.settle();
      expect(await fs.readdir('/state/volumes/.stowage/deleting')).toEqual([]);
      expect(await fs.readdir('/state/volumes/.stowage/removed')).toEqual([]);
      await expect(manager.remove('gone')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_NOT_FOUND });
    });

    it('with onRemove=retain keeps data aside, and a re-created volume is empty', async () => {
      const { manager, fs } = await memStack({ onRemove: 'retain' });
      await manager.create('kept');
      const path = await manager.mount('kept', 'c');
      await fs.writeFile(join(path, 'f'), 'precious');
      await manager.unmount('kept', 'c');
      const { retainedAt } = await manager.remove('kept');
      expect(retainedAt).toMatch(/\/\.stowage\/removed\/kept@/);
      expect(await fs.readFile(join(retainedAt!, 'f'), 'utf8')).toBe('precious');
      await manager.create('kept');
      expect(await fs.readdir(await manager.mount('kept', 'd'))).toEqual([]);
    });

    it('a per-call retain overrides the policy either way', async () => {
      const del = await memStack({ onRemove: 'delete' });
      await del.manager.create('v1');
      expect((await del.manager.remove('v1', { retain: true })).retainedAt).toBeTruthy();
      const keep = await memStack({ onRemove: 'retain' });
      await keep.manager.create('v2');
      expect((await keep.manager.remove('v2', { retain: false })).retainedAt).toBeUndefined();
    });
  });

  describe('get', () => {
    it('shows backend, size, creation and mount count in status', async () => {
      const { manager } = await memStack({ nodeId: 'n1' });
      await manager.create('shown', { size: '50M' });
      const info = await manager.get('shown');
      expect(info.status).toMatchObject({ backend: 'vfs', size: '50MiB', mounts: '0', createdBy: 'n1' });
      expect(Number.isNaN(Date.parse(info.createdAt))).toBe(false);
    });

    it('answers from the last known record when the backend has a passing fault', async () => {
      const { manager, backend } = await memStack();
      await manager.create('steady');
      await manager.get('steady');
      backend.failGet = new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, 'stale file handle');
      const info = await manager.get('steady');
      expect(info.name).toBe('steady');
      expect(info.status.warning).toMatch(/stale file handle/);
      await expect(manager.get('never-seen')).rejects.toMatchObject({ code: ErrorCodes.BACKEND_UNAVAILABLE });
    });
  });

  describe('restart recovery', () => {
    it('keeps the mount records of a volume whose record cannot be read at the start, and attaches it at its next mount', async () => {
      const first = await memStack();
      await first.manager.create('flaky');
      await first.manager.mount('flaky', 'c0ntainer');
      await simulateCrash(first);
      const second = await memStack({ fs: first.fs, beforeInit: (backend) => {
        backend.failGet = new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, 'stale file handle');
      } });
      second.backend.failGet = undefined;
      expect(second.manager.mountRecords()).toEqual([expect.objectContaining({ volume: 'flaky', id: 'c0ntainer', count: 1 })]);
      await expect(second.manager.remove('flaky')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_IN_USE });
      const path = await second.manager.mount('flaky', 'another');
      expect(second.manager.path('flaky')).toBe(path);
      await second.manager.unmount('flaky', 'c0ntainer');
      await second.manager.unmount('flaky', 'another');
      await second.manager.remove('flaky');
    });

    it('a restarted manager still knows mounts from before and releases them on Unmount', async () => {
      const first = await memStack();
      await first.manager.create('survivor');
      const path = await first.manager.mount('survivor', 'before-restart');
      await first.manager.mount('survivor', 'before-restart');
      await simulateCrash(first);
      const second = await memStack({ fs: first.fs });
      expect((await second.manager.get('survivor')).mountCount).toBe(2);
      expect(second.manager.path('survivor')).toBe(path);
      await expect(second.manager.remove('survivor')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_IN_USE });
      await second.manager.unmount('survivor', 'before-restart');
      await second.manager.unmount('survivor', 'before-restart');
      expect(second.backend.count('detach')).toBe(1);
      await second.manager.remove('survivor');
    });

    it('drops records of volumes removed while it was down', async () => {
      const first = await memStack();
      await first.manager.create('vanishing');
      await first.manager.mount('vanishing', 'm');
      await first.vfs.remove('vanishing', { retain: false }); // e.g. removed by another node's backend
      await simulateCrash(first);
      const second = await memStack({ fs: first.fs });
      expect(await readMountRecords('/state', first.fs)).toEqual({});
      await expect(second.manager.get('vanishing')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_NOT_FOUND });
    });

    it('refuses to start on unreadable mount records instead of forgetting mounts', async () => {
      const first = await memStack();
      await first.fs.writeFile('/state/mounts.json', '{ truncated');
      await first.manager.dispose();
      await expect(memStack({ fs: first.fs })).rejects.toMatchObject({ code: ErrorCodes.STATE_CORRUPT });
    });

    it('does not keep a mount whose record could not be saved', async () => {
      const real = memFs();
      let diskFull = false;
      const fs: FsPort = {
        ...real,
        rename: async (from, to) => {
          if (diskFull && /mounts\.(json|log)$/.test(String(to))) throw Object.assign(new Error('ENOSPC: no space left'), { code: 'ENOSPC' });
          return real.rename(from, to);
        },
        open: (async (...args: Parameters<FsPort['open']>) => {
          if (diskFull && String(args[0]).endsWith('mounts.log')) throw Object.assign(new Error('ENOSPC: no space left'), { code: 'ENOSPC' });
          return real.open(...args);
        }) as FsPort['open'],
      };
      const { manager } = await memStack({ fs });
      await manager.create('unsaved');
      diskFull = true;
      await expect(manager.mount('unsaved', 'm1')).rejects.toThrow(/cannot save mount records/);
      expect((await manager.get('unsaved')).mountCount).toBe(0);
      diskFull = false;
      await manager.remove('unsaved');
    });

    it('skips mount records with invalid volume names or ids, keeping the valid ones', async () => {
      const first = await memStack();
      await first.manager.create('good');
      await first.manager.mount('good', 'ok-id');
      await first.manager.dispose();
      const file = { format: 2, volumes: await readMountRecords('/state', first.fs) } as { format: number; volumes: Record<string, { ids: Record<string, unknown> }> };
      file.volumes['../escape'] = { ids: { m: { count: 1, since: 'x' } } };
      file.volumes.good.ids['bad\u0000id'] = { count: 1, since: 'x' };
      file.volumes.good.ids.negative = { count: -3, since: 'x' };
      await first.fs.writeFile('/state/mounts.json', JSON.stringify(file));
      const second = await memStack({ fs: first.fs });
      expect(second.manager.mountRecords().map((r) => `${r.volume}/${r.id}/${r.count}`)).toEqual(['good/ok-id/1']);
    });

    it('reads mount records of the earlier format', async () => {
      const first = await memStack();
      await first.manager.create('legacy');
      await first.manager.dispose();
      await first.fs.writeFile('/state/mounts.json', JSON.stringify({
        format: 1, writtenBy: 'node-a', writtenAt: 'x', volumes: { legacy: { old: { count: 2, since: '2020-01-01T00:00:00.000Z' } } },
      }));
      const second = await memStack({ fs: first.fs });
      expect((await second.manager.get('legacy')).mountCount).toBe(2);
    });

    it('drops mount records of a volume that was removed and re-created while it was down', async () => {
      const first = await memStack();
      await first.manager.create('reborn');
      await first.manager.mount('reborn', 'old-container');
      await simulateCrash(first);
      // Another node removes it (forced) and creates it again: same name, another volume.
      await first.vfs.remove('reborn', { retain: false });
      await new Promise((r) => setTimeout(r, 5));
      await first.vfs.create(createRequest('reborn', {}, { createdAt: new Date().toISOString(), createdBy: 'node-b' }));
      const second = await memStack({ fs: first.fs });
      expect((await second.manager.get('reborn')).mountCount).toBe(0);
      await second.manager.remove('reborn');
    });

    it('undoes and fails a mount whose mount marker cannot be made for the other nodes to see', async () => {
      const { fs, backend } = await memStack();
      const cluster = Object.assign(new LocalCluster(), {
        markMounted: async () => { throw Object.assign(new Error('EIO: i/o error, open'), { code: 'EIO' }); },
      });
      const manager = memContainer({ fs, backend }, new ContainerModule(({ rebind }) => {
        rebind(TOKENS.Cluster).toConstantValue(cluster);
      })).get<VolumeManager>(TOKENS.VolumeManager);
      await manager.init();
      await manager.create('unpublished');
      await expect(manager.mount('unpublished', 'm1')).rejects.toThrow(/mounting volume unpublished failed: i\/o error \(EIO\)/);
      expect((await manager.get('unpublished')).mountCount).toBe(0);
      expect(manager.mountRecords()).toEqual([]);
      expect(backend.count('detach')).toBe(1);
      expect(await readMountRecords('/state', fs)).toEqual({});
    });

    it('saves a mount as one line appended to the log the snapshot names, with the volume\'s incarnation', async () => {
      const { manager, fs } = await memStack({ nodeId: 'writer-node' });
      await manager.create('rec');
      const snapshot = JSON.parse(await fs.readFile('/state/mounts.json', 'utf8'));
      expect(snapshot).toMatchObject({ format: 2, writtenBy: 'writer-node', volumes: {} });
      await manager.mount('rec', 'id-9');
      await manager.mount('rec', 'id-9');
      // The snapshot is not rewritten per mount; the log grows by one line per saved change.
      expect(await fs.readFile('/state/mounts.json', 'utf8')).toBe(JSON.stringify(snapshot));
      const log = String(await fs.readFile('/state/mounts.log', 'utf8')).split('\n').filter(Boolean);
      expect(JSON.parse(log[0]!)).toEqual({ log: snapshot.log });
      expect(log).toHaveLength(3);
      const records = await readMountRecords('/state', fs);
      expect(records.rec?.ids['id-9']).toMatchObject({ count: 2 });
      expect(records.rec?.incarnation).toMatch(/^\d{4}-.+\/writer-node$/);
      expect((await fs.readdir('/state')).filter((f) => f.includes('.tmp-'))).toEqual([]);
    });

    it('skips a log line cut short by a crash, ignores a log the snapshot does not name, and starts afresh', async () => {
      const first = await memStack();
      await first.manager.create('kept');
      await first.manager.mount('kept', 'a');
      await first.manager.mount('kept', 'b');
      await simulateCrash(first);
      const log = String(await first.fs.readFile('/state/mounts.log', 'utf8'));
      // The daemon died half-way through appending the line that drops "b".
      await first.fs.writeFile('/state/mounts.log', log + '{"volume":"kept","mou');
      const second = await memStack({ fs: first.fs });
      expect(second.manager.mountRecords().map((r) => r.id)).toEqual(['a', 'b']);
      await second.manager.unmount('kept', 'b');
      await simulateCrash(second);
      expect((await readMountRecords('/state', first.fs)).kept?.ids).not.toHaveProperty('b');
      // A log the snapshot does not name (left from before it) changes nothing: the snapshot taken
      // at the second start still counts a and b.
      const stale = String(await first.fs.readFile('/state/mounts.log', 'utf8')).replace(/"log":"[0-9a-f]+"/, '"log":"0000"');
      await first.fs.writeFile('/state/mounts.log', stale + JSON.stringify({ volume: 'kept', mounts: null }) + '\n');
      const third = await memStack({ fs: first.fs });
      expect(third.manager.mountRecords().map((r) => r.id)).toEqual(['a', 'b']);
    });

    it('rewrites the snapshot once the log has grown well past the table, and keeps every count', async () => {
      const { manager, fs } = await memStack();
      await manager.create('busy');
      for (let i = 0; i < 600; i++) {
        await manager.mount('busy', 'm');
        await manager.unmount('busy', 'm');
      }
      await manager.mount('busy', 'kept');
      const lines = String(await fs.readFile('/state/mounts.log', 'utf8')).split('\n').filter(Boolean);
      expect(lines.length).toBeLessThan(1024);
      expect(Object.keys((await readMountRecords('/state', fs)).busy?.ids ?? {})).toEqual(['kept']);
    });
  });
});
