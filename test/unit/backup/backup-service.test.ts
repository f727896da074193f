import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, open as openFile, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { copyBackup } from '../../../src/core/backup/copy-backup.js';
import { acquireLock, backupTree, listAll, Repository } from '../../../src/core/backup/index.js';
import { createStowage, ErrorCodes, type Stowage } from '../../../src/index.js';
import * as realFs from 'node:fs/promises';
import { VfsBackend } from '../../../src/backends/vfs/vfs-backend.js';
import { parseVfsOptions } from '../../../src/backends/vfs/vfs-options.js';
import { ExecaCommandRunner } from '../../../src/core/command-runner.js';
import { silentLogger } from '../../../src/core/logger.js';

const dirs: string[] = [];
const open: Stowage[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()));
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'stowage-backup-service-'));
  dirs.push(dir);
  return dir;
}

async function stowageIn(dir: string): Promise<Stowage> {
  const stowage = await createStowage({ options: { 'vfs.path': join(dir, 'volumes') }, root: join(dir, 'state'), nodeId: 'node-1' });
  open.push(stowage);
  return stowage;
}

/** Writes a small tree into a volume through a mount, as a container would. */
async function fill(stowage: Stowage, volume: string, big: Buffer): Promise<void> {
  const path = await stowage.mount(volume, 'writer');
  await writeFile(join(path, 'big.bin'), big);
  await mkdir(join(path, 'conf'));
  await writeFile(join(path, 'conf', 'app.conf'), 'port=5432\n');
  await chmod(join(path, 'conf', 'app.conf'), 0o640);
  await stowage.unmount(volume, 'writer');
}

async function packsIn(repoDir: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const { key } of listAll(new VfsBlobStore(repoDir), 'packs/')) keys.push(key);
  return keys;
}

describe('BackupService over vfs (embedding API)', () => {
  it('lists the backups it can read beside an object among the records that does not load, saying which and what to do', async () => {
    const dir = await tempDir();
    const stowage = await stowageIn(dir);
    const repoDir = join(dir, 'backups');
    const dest = `vfs://${repoDir}`;
    await stowage.create('pg');
    await fill(stowage, 'pg', randomBytes(4096));
    const good = await stowage.createBackup('pg', { dest });
    await writeFile(join(repoDir, 'backups', 'pg', `${good.id}.bad`), 'garbage');
    const listed = await stowage.listBackups(dest);
    expect(listed.map((b) => [b.id, b.state])).toEqual([[good.id, 'complete'], [`${good.id}.bad`, 'unreadable']]);
    expect(listed[1]).toMatchObject({
      url: `${dest}?volume=pg`, volume: 'pg', key: `backups/pg/${good.id}.bad`,
      problem: expect.stringMatching(/^backups\/pg\/.*\.bad in .* is no backup record stowage can read \(.*\); put it right from a copy of the repository, or move it out of the repository by hand$/),
    });
    expect(listed[1]!.host).toBeUndefined();
    expect((await stowage.listBackups(dest, { volume: 'pg' })).map((b) => b.state)).toEqual(['complete', 'unreadable']);
  });

  it('makes a repository only where nothing is stored: someone else\'s files are refused and left alone', async () => {
    const dir = await tempDir();
    const stowage = await stowageIn(dir);
    await stowage.create('pg');
    await fill(stowage, 'pg', randomBytes(4096));
    // A mistyped destination holding a user's files, and a freshly made filesystem (lost+found, empty).
    const theirs = join(dir, 'documents');
    await mkdir(join(theirs, 'notes'), { recursive: true });
    await writeFile(join(theirs, 'notes', 'todo.txt'), 'mine');
    await expect(stowage.createBackup('pg', { dest: `vfs://${theirs}` })).rejects.toMatchObject({
      code: ErrorCodes.INVALID_REQUEST,
      message: expect.stringMatching(/ holds no backup repository but is not empty \("notes\/todo.txt" is there\): a new repository is made only where nothing is stored yet/),
    });
    expect((await readdir(theirs)).sort()).toEqual(['notes']);
    const fresh = join(dir, 'disk');
    await mkdir(join(fresh, 'lost+found'), { recursive: true });
    await expect(stowage.createBackup('pg', { dest: `vfs://${fresh}` })).resolves.toMatchObject({ state: 'complete', repositoryCreated: true });
  });

  it('backs a volume up through a snapshot, lists, verifies, restores it as a new volume, and deletes the backup', async () => {
    const dir = await tempDir();
    const stowage = await stowageIn(dir);
    const dest = `vfs://${join(dir, 'backups')}`;
    await stowage.create('pg');
    const big = randomBytes(3 * 1024 * 1024);
    await fill(stowage, 'pg', big);
    const phases = new Set<string>();
    const first = await stowage.createBackup('pg', { dest, onProgress: (p) => phases.add(p.phase) });
    // vfs snapshots are file-by-file reads of the live data: the backup reads it straight
    // into the destination, with no snapshot of its own.
    expect(first).toMatchObject({ volume: 'pg', backend: 'vfs', state: 'complete' });
    expect(first.snapshot).toBeUndefined();
    expect(first.url).toBe(`${dest}?volume=pg&backup=${first.id}`);
    expect([...phases]).toEqual(['backup']);
    // Nothing was at the destination: the answer says this backup made the repository.
    expect(first.repositoryCreated).toBe(true);
    expect(await stowage.manager.listSnapshots('pg')).toEqual([]);
    expect(first.stats).toMatchObject({ files: 2, filesRead: 2 });
    expect(first.stats!.newRawBytes).toBeGreaterThanOrEqual(big.length);

    // A second backup after a small change copies only what changed.
    const path = await stowage.mount('pg', 'writer');
    await writeFile(join(path, 'conf', 'app.conf'), 'port=6543\n');
    await stowage.unmount('pg', 'writer');
    const second = await stowage.createBackup('pg', { dest: `${dest}?volume=pg`, snapshot: undefined });
    expect(second.stats!.newRawBytes).toBeLessThan(64 * 1024);
    expect(second.repositoryCreated).toBeUndefined();
    // The first backup is the files cache: only the changed file is read again.
    expect(second.stats).toMatchObject({ files: 2, filesRead: 1, bytesRead: 'port=6543\n'.length });
    expect((await stowage.listBackups(dest)).map((b) => b.id)).toEqual([first.id, second.id]);
    expect(await stowage.verifyBackup(first.url)).toMatchObject({ url: first.url, files: 2, bytes: expect.any(Number) });
    // The repository's URL checks every backup in it.
    expect(await stowage.verifyBackup(dest)).toMatchObject({ url: dest, backups: 2, files: 4, chunks: expect.any(Number) });
    await expect(stowage.verifyBackup(`${dest}?volume=pg`)).rejects.toMatchObject({
      code: ErrorCodes.INVALID_REQUEST, message: expect.stringMatching(/verify takes one backup \(\?volume=NAME&backup=ID\) or a whole repository \(no volume\)$/),
    });

    // Restore the first backup as a new volume: the content is the first one's.
    const restored = await stowage.restoreVolume('pg-restored', first.url);
    expect(restored.created).toBe(true);
    // The answer shows the volume as the restore left it: ended, not "running".
    expect(restored.volume.status.restore).toBeUndefined();
    expect(restored.volume).toEqual(await stowage.inspect('pg-restored'));
    const back = await stowage.mount('pg-restored', 'reader');
    expect((await readFile(join(back, 'big.bin'))).equals(big)).toBe(true);
    expect(await readFile(join(back, 'conf', 'app.conf'), 'utf8')).toBe('port=5432\n');
    expect((await stat(join(back, 'conf', 'app.conf'))).mode & 0o777).toBe(0o640);
    await stowage.unmount('pg-restored', 'reader');
    // The restore's own mount is released.
    expect((await stowage.inspect('pg-restored')).mountCount).toBe(0);

    // The same through create with the backup option, as Docker's create sends it.
    await stowage.create('pg-again', { backup: second.url });
    const again = await stowage.mount('pg-again', 'reader');
    expect(await readFile(join(again, 'conf', 'app.conf'), 'utf8')).toBe('port=6543\n');
    await stowage.unmount('pg-again', 'reader');

    // Deleting both backups frees every pack. The first is deleted while another node's backup
    // holds the repository: its record goes at once, its chunks with the next delete.
    const repoDir = join(dir, 'backups');
    const packs = await packsIn(repoDir);
    expect(packs.length).toBeGreaterThan(0);
    const running = await acquireLock(new VfsBlobStore(repoDir), { kind: 'shared', purpose: 'backup of other', owner: 'node-b', autoRefresh: false });
    const deferred = await stowage.deleteBackup(first.url);
    await running.release();
    expect(deferred).toMatchObject({ url: first.url, deletedPacks: 0, freedBytes: 0, notFreed: expect.stringMatching(/^a later delete frees it \(.*backup of other/) });
    expect((await stowage.listBackups(dest)).map((b) => b.id)).toEqual([second.id]);
    expect(await packsIn(repoDir)).toEqual(packs);
    let packBytes = 0;
    for await (const { size } of listAll(new VfsBlobStore(repoDir), 'packs/')) packBytes += size;
    // The second delete's gc frees both backups' packs, and says how much (packs and their indexes).
    const freed = await stowage.deleteBackup(second.url);
    expect(freed).toMatchObject({ url: second.url, deletedPacks: packs.length });
    expect(freed.notFreed).toBeUndefined();
    expect(freed.freedBytes).toBeGreaterThanOrEqual(packBytes);
    expect(freed.freedBytes).toBeLessThan(packBytes + 64 * 1024);
    expect(await stowage.listBackups(dest)).toEqual([]);
    expect(await packsIn(repoDir)).toEqual([]);
  });

  it('takes as parent only the backup this node made last, as it wrote it: never one another machine forged', async () => {
    const dir = await tempDir();
    const stowage = await stowageIn(dir);
    const dest = `vfs://${join(dir, 'backups')}`;
    const repoDir = join(dir, 'backups');
    await stowage.create('db');
    await fill(stowage, 'db', randomBytes(300_000));
    const first = await stowage.createBackup('db', { dest });
    const second = await stowage.createBackup('db', { dest });
    expect(second).toMatchObject({ parent: first.id, stats: { filesRead: 0 } });

    // Another machine writes a record that sorts last and claims every file unchanged, with
    // chunks of its own: not a parent here, as this node did not make it.
    const genuine = JSON.parse(await readFile(join(repoDir, 'backups', 'db', second.id), 'utf8')) as { id: string };
    const forgedId = '20991231T235959999Z-0badc0de';
    await writeFile(join(repoDir, 'backups', 'db', forgedId), JSON.stringify({ ...genuine, id: forgedId }));
    const third = await stowage.createBackup('db', { dest });
    expect(third).toMatchObject({ parent: second.id, stats: { filesRead: 0 } });

    // The record this node made, replaced by another with the same id: not trusted, said, and
    // every file is read again.
    const path = join(repoDir, 'backups', 'db', third.id);
    const record = JSON.parse(await readFile(path, 'utf8')) as { host: string };
    await rm(path);
    await writeFile(path, JSON.stringify({ ...record, host: 'elsewhere' }));
    const fourth = await stowage.createBackup('db', { dest });
    expect(fourth.parent).toBeUndefined();
    expect(fourth.stats).toMatchObject({ files: 2, filesRead: 2 });
    expect(fourth.warnings).toEqual([expect.stringContaining(`the previous backup ${third.id} is not used as this backup's parent, so every file is read`)]);
    // And the next one goes on from the fourth, which this node made.
    expect(await stowage.createBackup('db', { dest })).toMatchObject({ parent: fourth.id, stats: { filesRead: 0 } });
  });

  it('answers a snapshot with what it could not take (a socket), and a snapshot without such things with no warnings', async () => {
    const dir = await tempDir();
    const stowage = await stowageIn(dir);
    await stowage.create('app');
    await fill(stowage, 'app', randomBytes(1000));
    expect(await stowage.manager.createSnapshot('app', 'plain')).not.toHaveProperty('warnings');
    const path = await stowage.mount('app', 'writer');
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(join(path, 'app.sock'), resolve));
    try {
      const taken = await stowage.manager.createSnapshot('app', 'with-socket');
      expect(taken.warnings).toEqual([expect.stringMatching(/app\.sock.*socket/)]);
      // The warning belongs to the create's answer; the list shows the snapshot as it is kept.
      expect((await stowage.manager.listSnapshots('app')).map((s) => [s.name, s.warnings])).toEqual([['plain', undefined], ['with-socket', undefined]]);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await stowage.unmount('app', 'writer');
    }
  });

  it('makes or deletes no repository inside its own storage: the volumes, their snapshots, its root', async () => {
    const dir = await tempDir();
    const stowage = await stowageIn(dir);
    await stowage.create('app');
    await fill(stowage, 'app', randomBytes(10_000));
    await stowage.manager.createSnapshot('app', 'kept');
    await symlink(join(dir, 'volumes'), join(dir, 'via-link'));
    for (const dest of [join(dir, 'volumes'), join(dir, 'volumes', 'app'), join(dir, 'state', 'repo'), join(dir, 'via-link', 'new-repo')]) {
      await expect(stowage.createBackup('app', { dest: `vfs://${dest}` }), dest)
        .rejects.toMatchObject({ code: ErrorCodes.INVALID_REQUEST, message: expect.stringContaining("is inside stowage's own storage") });
    }
    expect(await readdir(join(dir, 'volumes'))).not.toContain('packs');
    // The snapshot is a backup in the store's own repository: not deleted through a URL.
    const [snapshot] = await stowage.manager.listSnapshots('app');
    const inStore = `vfs://${join(dir, 'volumes', '.stowage', 'snapshots')}?volume=app&backup=20260101T000000000Z-00000000`;
    await expect(stowage.deleteBackup(inStore)).rejects.toMatchObject({ code: ErrorCodes.INVALID_REQUEST, message: expect.stringMatching(/is inside stowage's own storage .*: the backups there are volumes' snapshots, which only go as snapshots: delete the snapshot instead$/) });
    expect((await stowage.manager.listSnapshots('app')).map((s) => s.name)).toEqual([snapshot!.name]);
    // Next to it is fine.
    await expect(stowage.createBackup('app', { dest: `vfs://${join(dir, 'backups')}` })).resolves.toMatchObject({ state: 'complete' });
  });

  it('a volume removed with its data retained: its snapshots list, restore and delete through the URL the remove gave, and only they in the store', async () => {
    const dir = await tempDir();
    const stowage = await stowageIn(dir);
    await stowage.create('app');
    await fill(stowage, 'app', randomBytes(10_000));
    await stowage.manager.createSnapshot('app', 'kept');
    expect((await stowage.info()).keptSnapshots).toBeUndefined();
    const removed = await stowage.remove('app', { retain: true });
    expect(removed.snapshotsKept).toMatchObject({ snapshots: 1, backups: 1, url: expect.stringContaining('?volume=app..removed-') });
    // The store's description says they are there, and where.
    expect((await stowage.info()).keptSnapshots).toBe(`1 backup(s) of 1 removed volume(s) at vfs://${join(dir, 'volumes', '.stowage', 'snapshots')}`);
    const [backup, ...more] = await stowage.listBackups(removed.snapshotsKept!.url);
    expect(more).toEqual([]);
    expect(backup).toMatchObject({ state: 'complete', snapshot: 'kept' });
    await stowage.create('back', { backup: backup!.url });
    const path = await stowage.mount('back', 'reader');
    expect(await readFile(join(path, 'conf', 'app.conf'), 'utf8')).toBe('port=5432\n');
    await stowage.unmount('back', 'reader');
    // The same name elsewhere in the store is still refused; in the snapshot repository it is allowed.
    const elsewhere = backup!.url.replace('/.stowage/snapshots?', '?');
    await expect(stowage.deleteBackup(elsewhere)).rejects.toMatchObject({ code: ErrorCodes.INVALID_REQUEST, message: expect.stringContaining("is inside stowage's own storage") });
    await expect(stowage.deleteBackup(backup!.url)).resolves.toMatchObject({ url: backup!.url });
    expect(await stowage.listBackups(removed.snapshotsKept!.url)).toEqual([]);
    expect((await stowage.info()).keptSnapshots).toBeUndefined();
  });

  it('a delete whose garbage collection fails is a delete all the same, and says why nothing was freed', async () => {
    const dir = await tempDir();
    const stowage = await stowageIn(dir);
    const dest = `vfs://${join(dir, 'backups')}`;
    await stowage.create('gone');
    await fill(stowage, 'gone', randomBytes(200_000));
    const backup = await stowage.createBackup('gone', { dest });
    // A record another machine garbled: gc refuses to run while it does not load.
    await mkdir(join(dir, 'backups', 'backups', 'other'));
    await writeFile(join(dir, 'backups', 'backups', 'other', '20300101T000000000Z-00000000'), 'not json');
    const answer = await stowage.deleteBackup(backup.url);
    expect(answer).toMatchObject({ url: backup.url, deletedPacks: 0, freedBytes: 0, notFreed: expect.stringMatching(/^the garbage collection failed: garbage collection refused/) });
    await expect(stowage.inspectBackup(backup.url)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_NOT_FOUND });
    expect((await packsIn(join(dir, 'backups'))).length).toBeGreaterThan(0);
  });

  it('backs up from a named snapshot and keeps it; a backup taken with keepSnapshot keeps its snapshot', async () => {
    const dir = await tempDir();
    const stowage = await stowageIn(dir);
    const dest = `vfs://${join(dir, 'backups')}`;
    await stowage.create('app');
    await fill(stowage, 'app', randomBytes(1000));
    await stowage.manager.createSnapshot('app', 'nightly');
    const path = await stowage.mount('app', 'writer');
    await writeFile(join(path, 'conf', 'app.conf'), 'changed after the snapshot');
    await stowage.unmount('app', 'writer');
    const detail = await stowage.createBackup('app', { dest, snapshot: 'nightly' });
    expect(detail.snapshot).toBe('nightly');
    await stowage.restoreVolume('app-copy', detail.url);
    expect(await readFile(join(await stowage.mount('app-copy', 'r'), 'conf', 'app.conf'), 'utf8')).toBe('port=5432\n');
    await stowage.unmount('app-copy', 'r');
    const kept = await stowage.createBackup('app', { dest, keepSnapshot: true });
    expect((await stowage.manager.listSnapshots('app')).map((s) => s.name)).toEqual(['nightly', kept.snapshot]);
  });

  it('refuses to leave attributes out of a snapshot that is not a read of the files, and takes none', async () => {
    const dir = await tempDir();
    const ctx = { nodeId: 'node-1', root: join(dir, 'state'), fs: realFs, runner: new ExecaCommandRunner(), log: silentLogger };
    const vfs = new VfsBackend(ctx, parseVfsOptions({ 'vfs.path': join(dir, 'volumes') }, ctx.root));
    // Snapshots without readLive, as devicemapper's: a snapshot holds the filesystem whole.
    const whole = new Proxy(vfs, {
      get(target, prop) {
        if (prop === 'snapshots') {
          const s = target.snapshots!;
          return { createSnapshot: s.createSnapshot.bind(s), listSnapshots: s.listSnapshots.bind(s), deleteSnapshot: s.deleteSnapshot.bind(s), openSnapshot: s.openSnapshot.bind(s) };
        }
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    const stowage = await createStowage({ backend: whole, root: ctx.root, nodeId: 'node-1' });
    open.push(stowage);
    await stowage.create('disk');
    await expect(stowage.createSnapshot('disk', 'bare', { xattrs: false })).rejects.toMatchObject({
      code: ErrorCodes.INVALID_REQUEST, message: expect.stringContaining('snapshot holds the whole filesystem as it is'),
    });
    expect(await stowage.listSnapshots('disk')).toEqual([]);
    await stowage.createSnapshot('disk', 'whole');
    expect((await stowage.listSnapshots('disk')).map((s) => s.name)).toEqual(['whole']);
    await stowage.deleteSnapshot('disk', 'whole');
    expect(await stowage.listSnapshots('disk')).toEqual([]);
  });

  it('lists backups in progress from their live locks', async () => {
    const dir = await tempDir();
    const stowage = await stowageIn(dir);
    const dest = `vfs://${join(dir, 'backups')}`;
    await stowage.create('db');
    await fill(stowage, 'db', randomBytes(100));
    const done = await stowage.createBackup('db', { dest });
    const store = new VfsBlobStore(join(dir, 'backups'));
    const lock = await acquireLock(store, { kind: 'shared', purpose: 'backup of db', owner: 'other-host:42', autoRefresh: false });
    try {
      const listed = await stowage.listBackups(dest, { volume: 'db' });
      expect(listed.map((b) => [b.state, b.host])).toEqual([['complete', done.host], ['in-progress', 'other-host']]);
      expect(listed[1]!.url).toBe(`${dest}?volume=db`);
      expect(await stowage.listBackups(dest, { volume: 'other' })).toEqual([]);
    } finally {
      await lock.release();
    }
  });

  it('a restore that meets a corrupt chunk fails naming it and leaves no volume', async () => {
    const dir = await tempDir();
    const stowage = await stowageIn(dir);
    const dest = `vfs://${join(dir, 'backups')}`;
    await stowage.create('src');
    await fill(stowage, 'src', randomBytes(2 * 1024 * 1024));
    const backup = await stowage.createBackup('src', { dest });
    // Flip bytes in the middle of every pack: some chunk of the file is hit.
    for (const key of await packsIn(join(dir, 'backups'))) {
      const file = await openFile(join(dir, 'backups', key), 'r+');
      const { size } = await file.stat();
      await file.write(Buffer.alloc(64, 0xff), 0, 64, Math.floor(size / 3));
      await file.close();
    }
    await expect(stowage.restoreVolume('broken', backup.url)).rejects.toMatchObject({
      code: ErrorCodes.BACKUP_CORRUPT,
      message: expect.stringMatching(/restoring volume broken from .* failed: chunk [0-9a-f]{64} in packs\/.* is corrupt.*the volume was removed again/),
    });
    expect((await stowage.list()).map((v) => v.name)).toEqual(['src']);
    // Nothing of it is left in the store either (the data directory is deleted, not retained).
    expect((await readdir(join(dir, 'volumes'))).filter((n) => !n.startsWith('.'))).toEqual(['src']);
  });

  it('a restore of a backup that does not exist, or onto an existing volume, changes nothing', async () => {
    const dir = await tempDir();
    const stowage = await stowageIn(dir);
    const dest = `vfs://${join(dir, 'backups')}`;
    await stowage.create('here');
    await fill(stowage, 'here', randomBytes(100));
    const backup = await stowage.createBackup('here', { dest });
    await expect(stowage.createBackup('here', { dest: `vfs://${join(dir, 'no-such-dir', 'backups')}` })).rejects.toMatchObject({
      code: ErrorCodes.INVALID_REQUEST, message: expect.stringMatching(/no-such-dir does not exist/),
    });
    expect(await stowage.manager.listSnapshots('here')).toEqual([]);
    const missing = backup.url.replace(/backup=[^&]+/, 'backup=20200101T000000000Z-00000000');
    await expect(stowage.restoreVolume('nope', missing)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_NOT_FOUND });
    await expect(stowage.create('nope', { backup: `vfs://${join(dir, 'elsewhere')}?volume=here&backup=${backup.id}` }))
      .rejects.toMatchObject({ code: ErrorCodes.BACKUP_NOT_FOUND });
    await expect(stowage.create('nope', { backup: 'vfs://relative/path' })).rejects.toMatchObject({ code: ErrorCodes.INVALID_REQUEST });
    await expect(stowage.create('nope', { backup: backup.url, colour: 'blue' })).rejects.toMatchObject({ code: ErrorCodes.INVALID_OPTION });
    expect((await stowage.list()).map((v) => v.name)).toEqual(['here']);
    const path = await stowage.mount('here', 'w');
    await writeFile(join(path, 'conf', 'app.conf'), 'newer');
    await stowage.unmount('here', 'w');
    await expect(stowage.restoreVolume('here', backup.url)).rejects.toMatchObject({ code: ErrorCodes.VOLUME_EXISTS });
    expect(await readFile(join(await stowage.mount('here', 'r'), 'conf', 'app.conf'), 'utf8')).toBe('newer');
    await stowage.unmount('here', 'r');
  });
});

describe('a volume being restored', () => {
  it('cannot be mounted until its restore has finished, then mounts with all its data', async () => {
    const dir = await tempDir();
    const stowage = await stowageIn(dir);
    const dest = `vfs://${join(dir, 'backups')}`;
    const data = randomBytes(2 * 1024 * 1024);
    await stowage.create('src');
    await fill(stowage, 'src', data);
    const backup = await stowage.createBackup('src', { dest });
    const attempts: Array<Promise<unknown>> = [];
    await stowage.restoreVolume('copy', backup.url, {
      onProgress: (p) => {
        // A container started while the restore writes would see half the files.
        if (p.bytes > 0 && attempts.length === 0) attempts.push(stowage.mount('copy', 'early-container').then(() => 'mounted', (e: unknown) => e));
      },
    });
    expect(attempts).toHaveLength(1);
    expect(await attempts[0]).toMatchObject({ code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/being restored/) });
    const path = await stowage.mount('copy', 'late-container');
    // Compared as bytes: a deep equality of 2 MiB takes seconds.
    expect((await readFile(join(path, 'big.bin'))).equals(data)).toBe(true);
    expect((await stowage.inspect('copy')).mountCount).toBe(1);
    await stowage.unmount('copy', 'late-container');
  });
});

describe('cancelling', () => {
  it('an aborted backup writes no record and drops its snapshot; an aborted restore leaves no volume', async () => {
    const dir = await tempDir();
    const stowage = await stowageIn(dir);
    const dest = `vfs://${join(dir, 'backups')}`;
    await stowage.create('big');
    await fill(stowage, 'big', randomBytes(4 * 1024 * 1024));
    const reason = new Error('stop now');
    const first = new AbortController();
    await expect(stowage.createBackup('big', {
      dest, signal: first.signal, onProgress: (p) => { if (p.phase === 'backup') first.abort(reason); },
    })).rejects.toMatchObject({ code: 'E_CANCELLED', message: 'cancelled by the caller: stop now', cause: reason });
    expect(await stowage.manager.listSnapshots('big')).toEqual([]);
    expect(await stowage.listBackups(dest)).toEqual([]);

    const done = await stowage.createBackup('big', { dest });
    const second = new AbortController();
    await expect(stowage.restoreVolume('half', done.url, {
      signal: second.signal, onProgress: (p) => { if (p.bytes > 0) second.abort(reason); },
    })).rejects.toMatchObject({ code: 'E_CANCELLED', message: expect.stringMatching(/restoring volume half .* failed: cancelled by the caller: stop now; the volume was removed again/) });
    expect((await stowage.list()).map((v) => v.name)).toEqual(['big']);
  });
});

describe('backups of one volume at once', () => {
  it('into one repository run one after the other: the second stores only what changed, not a second copy', async () => {
    const dir = await tempDir();
    const stowage = await stowageIn(dir);
    const dest = `vfs://${join(dir, 'backups')}`;
    await stowage.create('twice');
    const data = randomBytes(8 * 1024 * 1024);
    await fill(stowage, 'twice', data);
    const [a, b] = await Promise.all([stowage.createBackup('twice', { dest }), stowage.createBackup('twice', { dest })]);
    const stored = [a.stats!.newStoredBytes, b.stats!.newStoredBytes].sort((x, y) => x - y);
    expect(stored[1]).toBeGreaterThan(data.length * 0.9);
    expect(stored[0]).toBeLessThan(data.length * 0.01);
    const packs = join(dir, 'backups', 'packs');
    let bytes = 0;
    for (const entry of await readdir(packs, { recursive: true, withFileTypes: true })) {
      if (entry.isFile()) bytes += (await stat(join(entry.parentPath, entry.name))).size;
    }
    expect(bytes).toBeLessThan(data.length * 1.2);
    expect((await stowage.listBackups(dest)).map((x) => x.state)).toEqual(['complete', 'complete']);
  });
});

describe('copyBackup', () => {
  it('copies only the blobs the destination lacks', async () => {
    const dir = await tempDir();
    const tree = join(dir, 'tree');
    await mkdir(tree);
    await writeFile(join(tree, 'a.bin'), randomBytes(2 * 1024 * 1024));
    await writeFile(join(tree, 'small.txt'), 'one');
    const source = await Repository.init(new VfsBlobStore(join(dir, 'source')));
    const dest = await Repository.init(new VfsBlobStore(join(dir, 'dest')));
    const one = await backupTree(tree, source, { volume: 'v' });
    await writeFile(join(tree, 'small.txt'), 'two, a little longer');
    await writeFile(join(tree, 'b.bin'), randomBytes(300 * 1024));
    const two = await backupTree(tree, source, { volume: 'v' });

    const first = await copyBackup(source, 'v', one.id, dest, { volume: 'copy' });
    // Everything the source stored for that backup, and nothing more.
    expect(first.copiedBytes).toBe(one.stats.newRawBytes);
    expect(first.copiedBlobs).toBe(one.stats.newBlobs);
    const second = await copyBackup(source, 'v', two.id, dest, { volume: 'copy' });
    // Only what the second backup added over the first: the changed file, the new one, the manifest.
    expect(second.copiedBytes).toBe(two.stats.newRawBytes);
    expect(second.copiedBytes).toBeLessThan(400 * 1024);
    // Copying again adds nothing.
    const third = await copyBackup(source, 'v', two.id, dest, { volume: 'copy' });
    expect(third.copiedBytes).toBe(0);
    expect(third.record.manifest).toEqual(two.manifest);
    expect((await dest.listBackups('copy')).map((r) => r.id)).toEqual([first.record.id, second.record.id, third.record.id]);
  });
});
