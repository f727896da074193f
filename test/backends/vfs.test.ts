import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import * as realFs from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createFsFromVolume, Volume } from 'memfs';
import { describe, expect, it, vi } from 'vitest';
import { ExecaCommandRunner } from '../../src/core/command-runner.js';
import { ErrorCodes } from '../../src/core/errors.js';
import type { FsPort } from '../../src/core/fs-port.js';
import { silentLogger } from '../../src/core/logger.js';
import { VfsBackend } from '../../src/backends/vfs/vfs-backend.js';
import { parseVfsOptions } from '../../src/backends/vfs/vfs-options.js';
import {
  describeBackendConformance, describeBackupConformance, describeSharedStoreConformance, describeSnapshotConformance, type ConformanceHarness,
} from '../../src/testing/index.js';
import { createRequest } from '../../src/core/create-request.js';
import { asFsPort, LocalFirstFs } from '../../src/core/local-fs.js';
import { memoryLogger } from '../helpers/memory-logger.js';

const CACHE_FILE = '/state/vfs-registry-cache.json';
interface SavedSnapshot { header: Record<string, unknown>; entries: Array<[string, { mtimeMs: unknown }]> }
/** The registry cache file's header line and entries. */
function savedSnapshot(text: string): SavedSnapshot {
  const cut = text.indexOf('\n');
  expect(cut).toBeGreaterThan(0);
  return { header: JSON.parse(text.slice(0, cut)) as Record<string, unknown>, entries: JSON.parse(text.slice(cut + 1)) as SavedSnapshot['entries'] };
}

function memFs(): FsPort {
  // memfs implements the fs/promises surface stowage uses; its types differ only nominally.
  return createFsFromVolume(new Volume()).promises as unknown as FsPort;
}

function vfs(fs: FsPort, root: string, raw: Record<string, string> = {}, nodeId = 'node-a'): VfsBackend {
  return new VfsBackend({ nodeId, root, fs, runner: new ExecaCommandRunner(), log: silentLogger }, parseVfsOptions(raw, root));
}

/** The hooks of the suite's optional checks, for a vfs store at `store` (a volume's data is `store/NAME`). */
function vfsHooks(fs: FsPort, store: string): Pick<ConformanceHarness, 'plantData' | 'dataRoot' | 'unavailable'> {
  return {
    plantData: async (name, file, content) => {
      await fs.mkdir(join(store, name), { recursive: true });
      await fs.writeFile(join(store, name, file), content);
    },
    dataRoot: store,
    unavailable: async () => ({
      backend: vfs(fs, '/elsewhere', { 'vfs.path': '/mnt/not-mounted', 'vfs.shared': 'true' }), missing: '/mnt/not-mounted',
    }),
  };
}

describeBackendConformance('vfs on memfs', async () => {
  const fs = memFs();
  const backend = vfs(fs, '/state');
  await backend.init();
  return { backend, fs, ...vfsHooks(fs, '/state/volumes') };
});

describeBackendConformance('vfs on a real directory', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'stowage-vfs-'));
  const backend = vfs(realFs, join(dir, 'root'), { 'vfs.path': join(dir, 'store') });
  await backend.init();
  return { backend, fs: realFs, ...vfsHooks(realFs, join(dir, 'store')), cleanup: () => rm(dir, { recursive: true, force: true }) };
});

describeSnapshotConformance('vfs on a real directory', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'stowage-vfs-snap-'));
  const backend = vfs(realFs, join(dir, 'root'), { 'vfs.path': join(dir, 'store') });
  await backend.init();
  return { backend, fs: realFs, cleanup: () => rm(dir, { recursive: true, force: true }) };
});

// What the daemon runs with: synchronous calls for paths on a local filesystem, flushes grouped.
describeBackendConformance('vfs on a real directory through the local fast path', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'stowage-vfs-fast-'));
  const fs = asFsPort(new LocalFirstFs());
  const backend = vfs(fs, join(dir, 'root'), { 'vfs.path': join(dir, 'store') });
  await backend.init();
  return { backend, fs, ...vfsHooks(fs, join(dir, 'store')), cleanup: () => rm(dir, { recursive: true, force: true }) };
});

describeSharedStoreConformance('vfs, two nodes on one directory, through the local fast path', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'stowage-vfs-shared-fast-'));
  const store = join(dir, 'store');
  await realFs.mkdir(store);
  const [first, second] = ['node-one', 'node-two'].map((node) =>
    vfs(asFsPort(new LocalFirstFs()), join(dir, node), { 'vfs.path': store, 'vfs.shared': 'true' }, node));
  await first!.init();
  await second!.init();
  return { first: first!, second: second!, fs: realFs, cleanup: () => rm(dir, { recursive: true, force: true }) };
});

describeSharedStoreConformance('vfs, two nodes on one shared directory', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'stowage-vfs-shared-'));
  const store = join(dir, 'store');
  await realFs.mkdir(store);
  const [first, second] = ['node-one', 'node-two'].map((node) => vfs(realFs, join(dir, node), { 'vfs.path': store, 'vfs.shared': 'true' }, node));
  await first!.init();
  await second!.init();
  return { first: first!, second: second!, fs: realFs, cleanup: () => rm(dir, { recursive: true, force: true }) };
});

describe('vfs snapshots of a name removed and made again through another node', () => {
  it('a name written late for the earlier volume (a snapshot racing the remove) is not the new volume\'s', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'stowage-vfs-incarnation-'));
    try {
      const store = join(dir, 'store');
      await realFs.mkdir(store);
      const a = vfs(realFs, join(dir, 'root-a'), { 'vfs.path': store, 'vfs.shared': 'true' }, 'node-a');
      const b = vfs(realFs, join(dir, 'root-b'), { 'vfs.path': store, 'vfs.shared': 'true' }, 'node-b');
      await a.init();
      await b.init();
      await a.create(createRequest('pg', {}, { createdAt: '2026-12-05T10:00:00.000Z', createdBy: 'node-a' }));
      await a.snapshots.createSnapshot('pg', 'late');
      const nameFile = join(store, '.stowage', 'snapshots', 'snapshots', 'pg', 'late');
      const written = JSON.parse(await realFs.readFile(nameFile, 'utf8')) as { incarnation?: string; backupId: string };
      expect(written.incarnation).toBe('node-a@2026-12-05T10:00:00.000Z');
      const backupFile = join(store, '.stowage', 'snapshots', 'backups', 'pg', written.backupId);
      const backupRecord = await realFs.readFile(backupFile);
      // Node b removes pg and makes it again; then the racing snapshot's name and backup land.
      await b.remove('pg', { retain: false });
      await b.create(createRequest('pg', {}, { createdAt: '2026-12-05T10:05:00.000Z', createdBy: 'node-b' }));
      await realFs.mkdir(join(store, '.stowage', 'snapshots', 'backups', 'pg'), { recursive: true });
      await realFs.writeFile(backupFile, backupRecord);
      await realFs.mkdir(join(nameFile, '..'), { recursive: true });
      await realFs.writeFile(nameFile, JSON.stringify(written));
      for (const node of [a, b]) {
        expect(await node.snapshots.listSnapshots('pg')).toEqual([]);
        await expect(node.snapshots.openSnapshot('pg', 'late')).rejects.toMatchObject({ code: ErrorCodes.SNAPSHOT_NOT_FOUND });
      }
      await a.dispose();
      await b.dispose();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('vfs backend', () => {
  it('refuses to start on a missing shared path instead of creating a local stand-in', async () => {
    const fs = memFs();
    const backend = vfs(fs, '/state', { 'vfs.path': '/mnt/nfs/volumes', 'vfs.shared': 'true' });
    await expect(backend.init()).rejects.toMatchObject({ code: ErrorCodes.BACKEND_UNAVAILABLE });
    await expect(fs.stat('/mnt/nfs/volumes')).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('declares global scope only for a shared path', async () => {
    const fs = memFs();
    await fs.mkdir('/mnt/shared', { recursive: true });
    expect(vfs(fs, '/s1', { 'vfs.path': '/mnt/shared', 'vfs.shared': 'true' }).capabilities.scope).toBe('global');
    expect(vfs(fs, '/s2', { 'vfs.path': '/mnt/shared' }).capabilities.scope).toBe('local');
  });

  it('refuses a store that vanished after this node used it (an unmounted share looks empty)', async () => {
    const fs = memFs();
    await fs.mkdir('/mnt/shared', { recursive: true });
    const first = vfs(fs, '/state', { 'vfs.path': '/mnt/shared', 'vfs.shared': 'true' });
    await first.init();
    await first.create(createRequest('vol1', {}, { createdAt: new Date().toISOString(), createdBy: 'node-a' }));
    // Simulate the share being unmounted: the mount point directory is empty again.
    await fs.rm('/mnt/shared', { recursive: true });
    await fs.mkdir('/mnt/shared');
    await expect(first.attach('vol1')).rejects.toMatchObject({ code: ErrorCodes.BACKEND_UNAVAILABLE });
    await expect(first.create(createRequest('vol2', {}, { createdAt: new Date().toISOString(), createdBy: 'node-a' })))
      .rejects.toMatchObject({ code: ErrorCodes.BACKEND_UNAVAILABLE });
    const restarted = vfs(fs, '/state', { 'vfs.path': '/mnt/shared', 'vfs.shared': 'true' });
    await expect(restarted.init()).rejects.toThrow(/no longer holds stowage store/);
    expect(await fs.readdir('/mnt/shared')).toEqual([]);
  });

  it('refuses a local store path that vanished after this node used it, and makes no directory there', async () => {
    const fs = memFs();
    const first = vfs(fs, '/state', { 'vfs.path': '/mnt/disk/store' });
    await first.init();
    // The disk is not mounted: its mount point is empty, the store's path missing.
    await fs.rm('/mnt/disk/store', { recursive: true });
    const restarted = vfs(fs, '/state', { 'vfs.path': '/mnt/disk/store' });
    await expect(restarted.init()).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/^vfs.path \/mnt\/disk\/store does not exist, but this node used stowage store [0-9a-f]+ there before; mount its filesystem there, then start stowage; if the store is really gone, remove \/state\/vfs-store.json/),
    });
    expect(await fs.readdir('/mnt/disk')).toEqual([]);
  });

  it('starts on another store found where this node used one, says so, and remembers the new one', async () => {
    const fs = memFs();
    await fs.mkdir('/mnt/shared', { recursive: true });
    await vfs(fs, '/state', { 'vfs.path': '/mnt/shared' }).init();
    const before = JSON.parse(String(await fs.readFile('/state/vfs-store.json', 'utf8'))) as { storeId: string };
    // Another filesystem, with a store of its own, mounted where the first one was.
    await fs.rm('/mnt/shared', { recursive: true });
    await fs.mkdir('/mnt/shared');
    await vfs(fs, '/other-node', { 'vfs.path': '/mnt/shared' }).init();
    const log = memoryLogger();
    const restarted = new VfsBackend({ nodeId: 'node-a', root: '/state', fs, runner: new ExecaCommandRunner(), log },
      parseVfsOptions({ 'vfs.path': '/mnt/shared' }, '/state'));
    await restarted.init();
    const now = (await restarted.describe()).storeId;
    expect(now).not.toBe(before.storeId);
    expect(log.lines).toContainEqual(expect.stringContaining(
      `warn vfs.path /mnt/shared now holds stowage store ${now}, not store ${before.storeId} that this node used there before`));
    expect(JSON.parse(String(await fs.readFile('/state/vfs-store.json', 'utf8')))).toEqual({ path: '/mnt/shared', storeId: now });
  });

  it('two nodes on one shared path see each other\'s creates and removes', async () => {
    const fs = memFs();
    await fs.mkdir('/mnt/shared', { recursive: true });
    const a = vfs(fs, '/state-a', { 'vfs.path': '/mnt/shared', 'vfs.shared': 'true' }, 'node-a');
    const b = vfs(fs, '/state-b', { 'vfs.path': '/mnt/shared', 'vfs.shared': 'true' }, 'node-b');
    await a.init();
    await b.init();
    expect(await b.list()).toEqual([]);
    await a.create(createRequest('shared1', { size: 1024 }, { createdAt: '2026-01-01T00:00:00.000Z', createdBy: 'node-a' }));
    expect((await b.list()).map((v) => v.name)).toEqual(['shared1']);
    expect((await b.get('shared1'))?.createdBy).toBe('node-a');
    await expect(b.create(createRequest('shared1', {}, { createdAt: '2026-01-01T00:00:00.000Z', createdBy: 'node-b' })))
      .rejects.toMatchObject({ code: ErrorCodes.VOLUME_EXISTS });
    await b.remove('shared1', { retain: false });
    expect(await a.list()).toEqual([]);
    expect(await a.get('shared1')).toBeUndefined();
    // Re-created elsewhere with other options: Get notices even though the name never left a's cache via list.
    await b.create(createRequest('shared1', { size: 2048 }, { createdAt: '2026-02-02T00:00:00.000Z', createdBy: 'node-b' }));
    expect((await a.get('shared1'))?.options.size).toBe(2048);
    // Once Get has seen the new record, List (which reuses unchanged answers) shows it too.
    expect((await a.list()).map((v) => v.options.size)).toEqual([2048]);
    await b.create(createRequest('shared2', {}, { createdAt: '2026-02-02T00:00:00.000Z', createdBy: 'node-b' }));
    expect((await a.list()).map((v) => v.name)).toEqual(['shared1', 'shared2']);
  });

  it('refuses to make a volume over data that belongs to no volume, unless asked to adopt it', async () => {
    const fs = memFs();
    const backend = vfs(fs, '/state');
    await backend.init();
    await fs.mkdir('/state/volumes/legacy');
    await fs.writeFile('/state/volumes/legacy/db.sqlite', 'old data');
    const req = createRequest('legacy', {}, { createdAt: new Date().toISOString(), createdBy: 'node-a' });
    await expect(backend.create(req)).rejects.toMatchObject({ code: ErrorCodes.DATA_CONFLICT, remedies: [{ action: 'adopt', volume: 'legacy' }] });
    expect(await backend.get('legacy')).toBeUndefined();
    const adopted = await backend.create({ ...req, adopt: true });
    expect(adopted.adopted).toBe(true);
    expect(await fs.readFile(join(await backend.attach('legacy'), 'db.sqlite'), 'utf8')).toBe('old data');
  });

  it('reports missing data instead of recreating it on attach', async () => {
    const fs = memFs();
    const backend = vfs(fs, '/state');
    await backend.init();
    await backend.create(createRequest('fragile', {}, { createdAt: new Date().toISOString(), createdBy: 'node-a' }));
    await fs.rm('/state/volumes/fragile', { recursive: true });
    await expect(backend.attach('fragile')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_DATA_MISSING });
    await expect(fs.stat('/state/volumes/fragile')).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('takes the record get just answered as read on attach, and reads the entry again for any other', async () => {
    const fs = memFs();
    const backend = vfs(fs, '/state');
    await backend.init();
    await backend.create(createRequest('quick', {}, { createdAt: new Date().toISOString(), createdBy: 'node-a' }));
    const entryFile = '/state/volumes/.stowage/volumes/quick.json';
    const lstat = vi.spyOn(fs, 'lstat');
    const entryReads = () => lstat.mock.calls.filter(([path]) => path === entryFile).length;
    const record = await backend.get('quick');
    expect(record?.name).toBe('quick');
    expect(entryReads()).toBe(1);
    expect(await backend.attach('quick', record)).toBe('/state/volumes/quick');
    expect(entryReads()).toBe(1);
    // An equal record that is not the one cached proves nothing about what get last saw.
    expect(await backend.attach('quick', { ...record! })).toBe('/state/volumes/quick');
    expect(entryReads()).toBe(2);
    expect(await backend.attach('quick')).toBe('/state/volumes/quick');
    expect(entryReads()).toBe(3);
  });

  it('never follows a registry entry that points outside the store', async () => {
    const fs = memFs();
    const backend = vfs(fs, '/state');
    await backend.init();
    await fs.writeFile('/state/volumes/.stowage/volumes/evil.json', JSON.stringify({
      format: 1, dataDir: '../../etc', record: { name: 'evil', options: {}, createdAt: 'x', createdBy: 'y' },
    }));
    await expect(backend.attach('evil')).rejects.toMatchObject({ code: ErrorCodes.STATE_CORRUPT });
  });

  it('applies uid, gid and mode to the volume root on a real directory', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'stowage-vfs-'));
    try {
      const backend = vfs(realFs, join(dir, 'root'));
      await backend.init();
      await backend.create(createRequest('owned', { uid: 1234, gid: 4321, mode: 0o750 }, { createdAt: 'x', createdBy: 'n' }));
      const stat = await realFs.stat(await backend.attach('owned'));
      expect(stat.mode & 0o7777).toBe(0o750);
      if (process.getuid?.() === 0) {
        expect(stat.uid).toBe(1234);
        expect(stat.gid).toBe(4321);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('deletes a volume whose files have names that are not UTF-8, through the fast path and without it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'stowage-vfs-'));
    try {
      for (const [label, fs] of [['fs/promises', realFs], ['local fast path', asFsPort(new LocalFirstFs())]] as const) {
        if (fs !== realFs) (fs as unknown as LocalFirstFs).trustIfLocal(dir);
        const root = join(dir, label.replace(/\W/g, '-'));
        const backend = vfs(fs, root);
        await backend.init();
        await backend.create(createRequest('latin1', {}, { createdAt: 'x', createdBy: 'n' }));
        const data = await backend.attach('latin1');
        // "café" in Latin-1, a file and a directory holding one, as another system writes them.
        const cafe = Buffer.concat([Buffer.from(`${data}/caf`), Buffer.from([0xe9])]);
        await realFs.writeFile(cafe, 'x');
        await realFs.mkdir(Buffer.concat([cafe, Buffer.from('-dir')]));
        await realFs.writeFile(Buffer.concat([cafe, Buffer.from('-dir/'), Buffer.from([0xff, 0xfe])]), 'y');
        await backend.detach();
        await backend.remove('latin1', { retain: false });
        await backend.settle();
        expect(await realFs.readdir(join(root, 'volumes', '.stowage', 'deleting')), label).toEqual([]);
        await backend.dispose();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('finishes deletions interrupted by a crash on the next start', async () => {
    const fs = memFs();
    const backend = vfs(fs, '/state');
    await backend.init();
    await fs.mkdir('/state/volumes/.stowage/deleting/gone@20260101T000000Z-abcdef/sub', { recursive: true });
    await fs.writeFile('/state/volumes/.stowage/deleting/gone@20260101T000000Z-abcdef/sub/file', 'bytes');
    // Not a name stowage gives what it moves aside: someone else's, left alone.
    await fs.mkdir('/state/volumes/.stowage/deleting/foreign', { recursive: true });
    const restarted = vfs(fs, '/state');
    await restarted.init();
    await restarted.settle();
    expect(await fs.readdir('/state/volumes/.stowage/deleting')).toEqual(['foreign']);
  });

  /** A store whose node ran once with `count` volumes and saved its registry cache. */
  async function storeAfterOneRun(count: number): Promise<FsPort> {
    const fs = memFs();
    const first = vfs(fs, '/state');
    await first.init();
    for (let i = 0; i < count; i += 1) {
      await first.create(createRequest(`cached-${i}`, {}, { createdAt: new Date().toISOString(), createdBy: 'node-a' }));
    }
    await first.dispose();
    return fs;
  }

  /** `fs`, recording the registry entries read (by file name). */
  function countingEntryReads(fs: FsPort): { fs: FsPort; reads: string[] } {
    const reads: string[] = [];
    const counting: FsPort = {
      ...fs,
      // Entries are read through open (no-follow); count both ways in.
      readFile: ((path: string, options: unknown) => {
        if (String(path).includes('/.stowage/volumes/')) reads.push(String(path).replace(/^.*\//, ''));
        return (fs.readFile as (p: string, o: unknown) => Promise<string>)(path, options);
      }) as FsPort['readFile'],
      open: ((path: string, ...rest: unknown[]) => {
        if (/\/.stowage\/volumes\/[^.][^/]*\.json$/.test(String(path))) reads.push(String(path).replace(/^.*\//, ''));
        return (fs.open as (p: string, ...r: unknown[]) => Promise<unknown>)(path, ...rest);
      }) as FsPort['open'],
    };
    return { fs: counting, reads };
  }

  it('a dispose waits for a cache save its timer started: nothing is written into the root after it returns', async () => {
    const fs = memFs();
    let release!: () => void;
    const held = new Promise<void>((r) => { release = r; });
    let reached!: () => void;
    const atSave = new Promise<void>((r) => { reached = r; });
    const writesCache = (path: unknown) => String(path).includes('vfs-registry-cache');
    // The save's first step on the cache file waits for the test.
    const gated: FsPort = {
      ...fs,
      open: (async (path: string, ...rest: unknown[]) => {
        if (writesCache(path)) { reached(); await held; }
        return (fs.open as (p: string, ...r: unknown[]) => Promise<unknown>)(path, ...rest);
      }) as FsPort['open'],
      writeFile: (async (path: string, ...rest: unknown[]) => {
        if (writesCache(path)) { reached(); await held; }
        return (fs.writeFile as (p: string, ...r: unknown[]) => Promise<void>)(path, ...rest);
      }) as FsPort['writeFile'],
    };
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const backend = vfs(gated, '/state');
      await backend.init();
      await backend.create(createRequest('saved', {}, { createdAt: new Date().toISOString(), createdBy: 'node-a' }));
      vi.advanceTimersByTime(60_000);
      await atSave;
      let disposed = false;
      const disposing = backend.dispose().then(() => { disposed = true; });
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
      expect(disposed).toBe(false);
      release();
      await disposing;
      expect(savedSnapshot(String(await fs.readFile('/state/vfs-registry-cache.json', 'utf8'))).entries.map((e) => e[0])).toEqual(['saved']);
    } finally {
      vi.useRealTimers();
    }
  });

  it('answers the first List after a restart from its saved cache, without reading every entry', async () => {
    const fs = await storeAfterOneRun(30);
    const counting = countingEntryReads(fs);
    await fs.unlink('/state/volumes/.stowage/volumes/cached-7.json'); // removed while this node was down
    const restarted = vfs(counting.fs, '/state');
    await restarted.init();
    const names = (await restarted.list()).map((v) => v.name);
    expect(names).toHaveLength(29);
    expect(names).not.toContain('cached-7');
    expect(counting.reads).toHaveLength(0);
    expect((await restarted.get('cached-3'))?.createdBy).toBe('node-a');
  });

  /** Spoils three of ten saved entries, and writes the snapshot back through `write` (format 1, or 2 with a header). */
  async function spoiltSnapshot(write: (fs: FsPort, saved: SavedSnapshot) => Promise<void>): Promise<{ reads: string[]; spoilt: string[]; fs: FsPort; restarted: VfsBackend }> {
    const fs = await storeAfterOneRun(10);
    const saved = savedSnapshot(await fs.readFile(CACHE_FILE, 'utf8'));
    const spoilt = saved.entries.slice(0, 3).map(([name]) => `${name}.json`);
    expect(saved.entries).toHaveLength(10);
    saved.entries[0] = 5 as unknown as [string, { mtimeMs: unknown }]; // not an entry at all
    saved.entries[1]![1].mtimeMs = 'yesterday';
    saved.entries[2]![0] = 'cached-other'; // names another volume than its record
    saved.header.epoch = 42;
    await write(fs, saved);
    const counting = countingEntryReads(fs);
    const restarted = vfs(counting.fs, '/state');
    await restarted.init();
    expect((await restarted.list()).map((v) => v.name).sort()).toEqual([...Array(10).keys()].map((i) => `cached-${i}`).sort());
    return { reads: counting.reads.sort(), spoilt: spoilt.sort(), fs, restarted };
  }

  it('reuses the good entries of a saved cache of an earlier format that holds bad ones, reading only what it cannot trust', async () => {
    const { reads, spoilt, fs, restarted } = await spoiltSnapshot((fs, saved) =>
      fs.writeFile(CACHE_FILE, JSON.stringify({ ...saved.header, format: 1, entries: saved.entries })));
    expect(reads).toEqual(spoilt);
    // Saved again in the current format, every entry in it.
    await restarted.dispose();
    const again = savedSnapshot(await fs.readFile(CACHE_FILE, 'utf8'));
    expect(again.header).toMatchObject({ format: 2 });
    expect(again.entries).toHaveLength(10);
  });

  it('checks each entry of a saved cache that another schema wrote, reading only what fails', async () => {
    const { reads, spoilt } = await spoiltSnapshot((fs, saved) => {
      const body = JSON.stringify(saved.entries);
      const header = { ...saved.header, epoch: undefined, schema: 'written-by-another-version', digest: createHash('sha256').update(body).digest('hex') };
      return fs.writeFile(CACHE_FILE, `${JSON.stringify(header)}\n${body}`);
    });
    expect(reads).toEqual(spoilt);
  });

  it('uses nothing of a saved cache whose entries changed after it was written: every entry is read', async () => {
    const { reads } = await spoiltSnapshot((fs, saved) => fs.writeFile(CACHE_FILE, `${JSON.stringify(saved.header)}\n${JSON.stringify(saved.entries)}`));
    expect(reads).toEqual([...Array(10).keys()].map((i) => `cached-${i}.json`).sort());
  });

  it('validates its options', () => {
    expect(() => parseVfsOptions({ 'vfs.path': 'relative/dir' }, '/r')).toThrow(/absolute/);
    expect(() => parseVfsOptions({ 'vfs.shared': 'maybe' }, '/r')).toThrow(/true or false/);
    expect(() => parseVfsOptions({ 'vfs.pth': '/x' }, '/r')).toThrow(/unknown vfs option "vfs.pth"/);
    expect(parseVfsOptions({}, '/var/lib/stowage')).toEqual({ path: '/var/lib/stowage/volumes', shared: 'auto' });
    expect(parseVfsOptions({ 'vfs.shared': 'false' }, '/r').shared).toBe(false);
    expect(parseVfsOptions({ 'vfs.shared': 'true' }, '/r').shared).toBe(true);
  });
});

describeBackupConformance('vfs on a real directory, through the core', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'stowage-vfs-backup-'));
  const other = await mkdtemp(join(tmpdir(), 'stowage-vfs-backup-other-'));
  return {
    backend: vfs(asFsPort(new LocalFirstFs()), join(dir, 'backend'), { 'vfs.path': join(dir, 'store') }),
    root: join(dir, 'core'),
    cleanup: () => rm(dir, { recursive: true, force: true }),
    // Another vfs store: a restore makes its volume there from the same repository.
    other: {
      label: 'a second vfs store',
      backend: vfs(asFsPort(new LocalFirstFs()), join(other, 'backend'), { 'vfs.path': join(other, 'store') }),
      root: join(other, 'core'),
      cleanup: () => rm(other, { recursive: true, force: true }),
    },
  };
});
