import { describe, expect, it } from 'vitest';
import { ExecaCommandRunner } from '../../src/core/command-runner.js';
import type { FsPort } from '../../src/core/fs-port.js';
import { VfsBackend } from '../../src/backends/vfs/vfs-backend.js';
import { parseVfsOptions } from '../../src/backends/vfs/vfs-options.js';
import { createRequest } from '../../src/core/create-request.js';
import { memoryLogger } from '../helpers/memory-logger.js';
import { memFs } from '../helpers/memfs-stack.js';

const request = (name: string) => createRequest(name, {}, { createdAt: '2026-01-01T00:00:00.000Z', createdBy: 'node-a' });

/** memfs whose fsyncs wait while the gate is shut, so "flushed yet?" can be asked. */
function gatedSyncFs(): { fs: FsPort; gate: { shut: () => void; open: () => void }; synced: string[] } {
  const base = memFs();
  const synced: string[] = [];
  let shut = false;
  const waiting: Array<() => void> = [];
  const fs = {
    ...base,
    open: (async (...args: Parameters<FsPort['open']>) => {
      const handle = await base.open(...args);
      const path = String(args[0]);
      return new Proxy(handle, {
        get(target, prop) {
          if (prop === 'sync') {
            return async () => {
              if (shut) await new Promise<void>((resolve) => waiting.push(resolve));
              synced.push(path);
            };
          }
          const value = Reflect.get(target, prop) as unknown;
          return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
        },
      });
    }) as FsPort['open'],
  };
  return {
    fs, synced,
    gate: { shut: () => { shut = true; }, open: () => { shut = false; for (const go of waiting.splice(0)) go(); } },
  };
}

/** Whether `promise` settles while the event loop turns a few times. */
async function settlesSoon(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  void promise.then(() => { done = true; }, () => { done = true; });
  for (let i = 0; i < 30 && !done; i++) await new Promise((r) => setImmediate(r));
  return done;
}

describe('vfs durability of volume records', () => {
  it('answers a create before its record is flushed, and holds its first mount until it is', async () => {
    const { fs, synced, gate } = gatedSyncFs();
    const backend = new VfsBackend({ nodeId: 'node-a', root: '/state', fs, runner: new ExecaCommandRunner(), log: memoryLogger() },
      parseVfsOptions({ 'vfs.path': '/store' }, '/state'));
    await backend.init();
    gate.shut();
    // The create answers although no fsync can finish: its record is queued for the next flush.
    const record = await backend.create(request('web'));
    expect(record.name).toBe('web');
    const entryFlushed = () => synced.some((p) => p.startsWith('/store/.stowage/volumes/.tmp-'));
    expect(entryFlushed()).toBe(false);
    // The first mount waits for the record to be on disk: no data goes into a volume that could vanish.
    const attached = backend.attach('web');
    expect(await settlesSoon(attached)).toBe(false);
    gate.open();
    expect(await attached).toBe('/store/web');
    expect(entryFlushed()).toBe(true);
    expect(synced).toContain('/store/.stowage/volumes');
    // A later mount finds nothing pending and does not wait.
    gate.shut();
    expect(await settlesSoon(backend.attach('web'))).toBe(true);
    gate.open();
    await backend.dispose();
  });

  it('flushes the registry directory after a removal, by the time the backend is disposed at the latest', async () => {
    const { fs, synced, gate } = gatedSyncFs();
    const backend = new VfsBackend({ nodeId: 'node-a', root: '/state', fs, runner: new ExecaCommandRunner(), log: memoryLogger() },
      parseVfsOptions({ 'vfs.path': '/store' }, '/state'));
    await backend.init();
    await backend.create(request('gone'));
    await backend.attach('gone');
    synced.length = 0;
    gate.shut();
    await backend.remove('gone', { retain: false });
    const disposed = backend.dispose();
    expect(await settlesSoon(disposed)).toBe(false);
    gate.open();
    await disposed;
    expect(synced).toContain('/store/.stowage/volumes');
  });
});
