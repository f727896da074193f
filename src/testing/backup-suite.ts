import { link, lstat, mkdtemp, open, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildContainer } from '../container.js';
import type { Backend } from '../core/backend.js';
import { ExecaCommandRunner } from '../core/command-runner.js';
import type { BackupDetail, BackupService } from '../core/backup/service-contract.js';
import { ErrorCodes, StowageError } from '../core/errors.js';
import { silentLogger, type Logger } from '../core/logger.js';
import { TOKENS } from '../core/tokens.js';
import type { VolumeManager } from '../core/volume-manager.js';
import { allocatedBytes, copyTree, describeTree, largestFile, MiB, SPARSE, writeTree, type EntryFacts } from './backup-tree.js';
import { NODE } from './harness.js';

/**
 * What a backend's test file gives the backup suite: a backend not yet initialised (the suite
 * runs it through the core, as the daemon does, and the core initialises it) and an empty state
 * directory for that core. Volume paths must be on the local machine's file system: the suite
 * writes and compares files through node:fs, as containers and the backup library do.
 */
export interface BackupConformanceHarness {
  backend: Backend;
  /** The core's node-local state (mount records, restore journal): an empty directory. */
  root: string;
  /** Removes what the suite left, once the core is stopped. */
  cleanup?(): Promise<void>;
  /**
   * Another backend (any kind, not initialised) with its own empty state directory: the suite
   * restores a backup into it too, since a file-level backup restores into any backend.
   */
  other?: { label: string; backend: Backend; root: string; cleanup?(): Promise<void> };
  /** Per-test timeout; slow backends (a VM, a gluster pool) need minutes. */
  timeoutMs?: number;
  logger?: Logger;
}

interface Core {
  manager: VolumeManager;
  backups: BackupService;
}

/** The core over `backend`, bound as the daemon binds it (src/container.ts), without a container engine. */
async function startCore(backend: Backend, root: string, logger: Logger): Promise<Core> {
  const container = buildContainer({ backend, backendOptions: {}, root, nodeId: NODE, onRemove: 'delete', logger });
  const manager = container.get<VolumeManager>(TOKENS.VolumeManager);
  await manager.init();
  return { manager, backups: container.get<BackupService>(TOKENS.BackupService) };
}


/** What the suite changes between the two backups: one file rewritten, one added, one removed. */
const CHANGED = { rewritten: 'small/f5.txt', added: 'small/new.txt', removed: 'small/f7.txt' };

/**
 * The backup suite, for backends that can snapshot volumes: backups through the core
 * (VolumeManager + CoreBackupService as the daemon binds them) to a vfs:// repository, restored
 * into new volumes on the same backend (and on `other`) and compared file by file.
 */
export function describeBackupConformance(label: string, setup: () => Promise<BackupConformanceHarness>): void {
  describe(`Backup conformance: ${label}`, () => {
    let h: BackupConformanceHarness;
    let core: Core;
    let other: Core | undefined;
    let dir: string;
    let dest: string;
    let first: BackupDetail | undefined;
    let second: BackupDetail | undefined;
    const trees: Record<'first' | 'second', Map<string, EntryFacts> | undefined> = { first: undefined, second: undefined };
    let timeout = 120_000;
    /** Whether the backend's file system kept the holes of the suite's sparse file when written. */
    let sourceHasHoles = false;

    beforeAll(async () => {
      h = await setup();
      timeout = h.timeoutMs ?? timeout;
      dir = await mkdtemp(join(tmpdir(), 'stowage-backup-suite-'));
      dest = `vfs://${join(dir, 'repository')}`;
      core = await startCore(h.backend, h.root, h.logger ?? silentLogger);
      if (h.other) other = await startCore(h.other.backend, h.other.root, h.logger ?? silentLogger);
    }, 600_000);

    afterAll(async () => {
      const errors: unknown[] = [];
      const step = async (work: () => Promise<unknown> | undefined) => {
        try {
          await work();
        } catch (err) {
          errors.push(err);
        }
      };
      await step(() => other?.manager.dispose());
      await step(() => core?.manager.dispose());
      await step(() => h?.other?.cleanup?.());
      await step(() => h?.cleanup?.());
      await step(() => (dir ? rm(dir, { recursive: true, force: true }) : undefined));
      if (errors.length > 0) throw errors[0];
    }, 600_000);

    /** Runs `work` on the volume's path through an ordinary mount, then unmounts. */
    async function withMounted<T>(c: Core, volume: string, work: (path: string) => Promise<T>): Promise<T> {
      const path = await c.manager.mount(volume, 'backup-suite');
      try {
        return await work(path);
      } finally {
        await c.manager.unmount(volume, 'backup-suite');
      }
    }

    function needs<T>(value: T | undefined, what: string): T {
      if (value === undefined) throw new Error(`${what} is missing: an earlier test of this suite failed`);
      return value;
    }

    it('backs a volume up from a snapshot, then again after a change: the second reads only what changed', async () => {
      await core.manager.create('source');
      trees.first = await withMounted(core, 'source', async (path) => {
        await writeTree(path);
        sourceHasHoles = await allocatedBytes(join(path, SPARSE.name)) < SPARSE.size / 2;
        return describeTree(path);
      });
      // The backend's file system keeps what the suite set, so the comparisons below are of something.
      expect(trees.first.get('small/f3.txt')?.xattrs).toEqual([['user.origin', Buffer.from('conformance').toString('base64')]]);
      if (process.getuid?.() === 0) expect(trees.first.get('whiteout')).toMatchObject({ type: 'chardev', rdev: 0 });
      await core.manager.createSnapshot('source', 'before');
      const phases = new Set<string>();
      first = await core.backups.createBackup('source', { dest, snapshot: 'before', onProgress: (p) => phases.add(p.phase) });
      expect(first).toMatchObject({ volume: 'source', snapshot: 'before', backend: h.backend.name, state: 'complete' });
      expect(first.url).toBe(`${dest}?volume=source&backup=${first.id}`);
      // A file with two names is one file to the backup.
      const fileCount = [...trees.first.values()].filter((e) => e.type === 'file' && e.linkOf === undefined).length;
      expect(first.stats).toMatchObject({ files: fileCount, skipped: 0 });
      expect(first.stats!.bytes).toBeGreaterThanOrEqual(6 * MiB);
      expect(first.warnings).toEqual([]);
      expect(phases.size).toBeGreaterThan(0);
      // The named snapshot is the user's: a backup from it keeps it.
      expect((await core.manager.listSnapshots('source')).map((s) => s.name)).toContain('before');

      trees.second = await withMounted(core, 'source', async (path) => {
        await writeFile(join(path, CHANGED.rewritten), 'rewritten after the first backup, and longer than before\n');
        await writeFile(join(path, CHANGED.added), 'added after the first backup\n');
        await unlink(join(path, CHANGED.removed));
        return describeTree(path);
      });
      second = await core.backups.createBackup('source', { dest });
      expect(second).toMatchObject({ volume: 'source', parent: first.id, state: 'complete' });
      const changedBytes = trees.second.get(CHANGED.rewritten)!.size! + trees.second.get(CHANGED.added)!.size!;
      // The backup's own counters: the two new or rewritten files are read, nothing else is.
      expect(second.stats).toMatchObject({ files: fileCount, filesRead: 2, bytesRead: changedBytes, skipped: 0 });
      expect(second.stats!.bytes).toBe(first.stats!.bytes - trees.first.get(CHANGED.removed)!.size!
        - trees.first.get(CHANGED.rewritten)!.size! + changedBytes);
      // What it added to the repository is its trees and two small files, not the large one again.
      expect(second.stats!.newRawBytes).toBeLessThan(MiB);
      // A backup that took its own snapshot deletes it: only the user's remains.
      expect((await core.manager.listSnapshots('source')).map((s) => s.name)).toEqual(['before']);
    }, timeout);

    it('lists both backups oldest first, inspects and verifies each', async () => {
      const [a, b] = [needs(first, 'the first backup'), needs(second, 'the second backup')];
      const listed = await core.backups.listBackups(dest, { volume: 'source' });
      expect(listed.map((s) => s.id)).toEqual([a.id, b.id]);
      expect(listed.every((s) => s.state === 'complete')).toBe(true);
      expect(await core.backups.listBackups(`${dest}?volume=elsewhere`)).toEqual([]);
      expect(await core.backups.inspectBackup(b.url)).toEqual(b);
      for (const backup of [a, b]) {
        const verified = await core.backups.verifyBackup(backup.url);
        expect(verified).toMatchObject({ url: backup.url, files: backup.stats!.files });
        // Each distinct chunk is read once: only the sparse file's runs of zeros repeat.
        expect(verified.bytes).toBeLessThanOrEqual(backup.stats!.bytes);
        expect(verified.bytes).toBeGreaterThanOrEqual(backup.stats!.bytes - (SPARSE.size - SPARSE.dataBytes));
      }
    }, timeout);

    it('restores each backup into a new volume: every file, link, mode, owner and time as backed up', async () => {
      for (const [name, backup, tree] of [['restored-1', first, trees.first], ['restored-2', second, trees.second]] as const) {
        const made = await core.backups.restoreVolume(name, needs(backup, name).url);
        expect(made.created).toBe(true);
        expect(await withMounted(core, name, describeTree)).toEqual(needs(tree, 'the tree'));
        // Holes come back as holes where the backend keeps them: a restore into a thin volume
        // must not allocate what the volume backed up never had.
        if (sourceHasHoles) {
          const allocated = await withMounted(core, name, (path) => allocatedBytes(join(path, SPARSE.name)));
          expect(allocated, `${name}: bytes allocated for ${SPARSE.name}`).toBeLessThan(SPARSE.size / 2);
        }
      }
      // The source is as the second backup found it: restores read, never write, it.
      expect(await withMounted(core, 'source', describeTree)).toEqual(trees.second);
      // The restore's own mount is gone: only the suite's were ever counted, and they are released.
      expect(core.manager.mountRecords().filter((r) => r.volume.startsWith('restored-'))).toEqual([]);
    }, timeout);

    it('a restore given uid, gid and mode applies them to the new volume\'s root, and restores the rest as backed up', async () => {
      const b = needs(second, 'the second backup');
      await core.backups.restoreVolume('restored-owned', b.url, { volumeOptions: { uid: '4321', gid: '8765', mode: '0700' } });
      const root = await withMounted(core, 'restored-owned', (path) => lstat(path));
      expect({ uid: root.uid, gid: root.gid, mode: root.mode & 0o7777 }).toEqual({ uid: 4321, gid: 8765, mode: 0o700 });
      expect(await withMounted(core, 'restored-owned', describeTree)).toEqual(trees.second);
      await core.manager.remove('restored-owned');
    }, timeout);

    it('a restore into an existing name, or from a backup that is not there, changes nothing', async () => {
      const b = needs(second, 'the second backup');
      await expect(core.backups.restoreVolume('restored-2', b.url)).rejects.toMatchObject({ code: ErrorCodes.VOLUME_EXISTS });
      expect(await withMounted(core, 'restored-2', describeTree)).toEqual(trees.second);
      const ghost = b.url.replace(b.id, '20200101T000000000Z-00000000');
      await expect(core.backups.restoreVolume('never', ghost)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_NOT_FOUND });
      await expect(core.manager.get('never')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_NOT_FOUND });
    }, timeout);

    it('a restore that fails half-way (a corrupt pack, a cancel) leaves no volume behind', async () => {
      const b = needs(second, 'the second backup');
      // A copy of the repository with one pack damaged: the restore reads it and must fail.
      const broken = join(dir, 'broken');
      await copyTree(join(dir, 'repository'), broken);
      const pack = await largestFile(join(broken, 'packs'));
      const handle = await open(pack, 'r+');
      try {
        const { size } = await handle.stat();
        await handle.write(Buffer.alloc(4096, 0x5a), 0, 4096, Math.floor(size / 2));
      } finally {
        await handle.close();
      }
      const brokenUrl = b.url.replace(join(dir, 'repository'), broken);
      const failure = core.backups.restoreVolume('half', brokenUrl);
      await expect(failure).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT });
      await expect(failure).rejects.toThrow(/the volume was removed again/);
      await expect(core.manager.get('half')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_NOT_FOUND });
      await expect(core.backups.verifyBackup(brokenUrl)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT });

      const abort = new AbortController();
      const cancelled = core.backups.restoreVolume('cancelled', b.url, {
        signal: abort.signal,
        onProgress: (p) => {
          if (p.phase === 'restore') abort.abort(new StowageError(ErrorCodes.CANCELLED, 'cancelled by the suite'));
        },
      });
      await expect(cancelled).rejects.toMatchObject({ code: ErrorCodes.CANCELLED, message: expect.stringMatching(/cancelled by the suite.*removed again/) });
      await expect(core.manager.get('cancelled')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_NOT_FOUND });
      expect((await core.manager.list()).map((v) => v.name).sort()).toEqual(['restored-1', 'restored-2', 'source']);
    }, timeout);

    it('deleting the first backup leaves the second whole: it verifies and restores', async () => {
      const [a, b] = [needs(first, 'the first backup'), needs(second, 'the second backup')];
      await core.backups.deleteBackup(a.url);
      expect((await core.backups.listBackups(dest, { volume: 'source' })).map((s) => s.id)).toEqual([b.id]);
      await expect(core.backups.inspectBackup(a.url)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_NOT_FOUND });
      await expect(core.backups.restoreVolume('from-deleted', a.url)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_NOT_FOUND });
      await core.backups.verifyBackup(b.url);
      await core.manager.remove('restored-2');
      await core.backups.restoreVolume('restored-2', b.url);
      expect(await withMounted(core, 'restored-2', describeTree)).toEqual(trees.second);
    }, timeout);

    it('restores into another backend as well (when the test file gives one)', async (ctx) => {
      if (!other || !h.other) {
        ctx.skip();
        return;
      }
      const b = needs(second, 'the second backup');
      // A file system that takes no user.* attributes (tmpfs before Linux 6.6) gets the data
      // and the rest: the restore warns about those it could not set.
      await other.manager.create('xattr-probe');
      const takesUser = await withMounted(other, 'xattr-probe', async (path) => {
        await writeFile(join(path, 'probe'), '');
        return new ExecaCommandRunner().run('setfattr', ['-n', 'user.probe', '-v', '1', '--', join(path, 'probe')]).then(() => true, () => false);
      });
      await other.manager.remove('xattr-probe');
      const want = new Map([...needs(trees.second, 'the second tree')].map(([path, facts]) => {
        const xattrs = takesUser ? facts.xattrs : facts.xattrs?.filter(([name]) => !name.startsWith('user.'));
        const { xattrs: _all, ...rest } = facts;
        return [path, xattrs && xattrs.length > 0 ? { ...rest, xattrs } : rest];
      }));
      const made = await other.backups.restoreVolume('moved', b.url);
      expect(made.volume.backend).toBe(h.other.backend.name);
      expect(await withMounted(other, 'moved', describeTree)).toEqual(want);
    }, timeout);
  });
}
