import { spawn, spawnSync } from 'node:child_process';
import * as realFs from 'node:fs/promises';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, realpath, rename, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ExecaCommandRunner } from '../../src/core/command-runner.js';
import { ErrorCodes } from '../../src/core/errors.js';
import { VfsBackend } from '../../src/backends/vfs/vfs-backend.js';
import { parseVfsOptions } from '../../src/backends/vfs/vfs-options.js';
import { memoryLogger, type MemoryLogger } from '../helpers/memory-logger.js';
import { swapForSymlinks } from '../helpers/symlink-swapper.js';
import { createRequest } from '../../src/core/create-request.js';
import { findExecutable, systemSuite } from '../helpers/requirements.js';
import { parseMountinfo } from '../../src/core/proc-mounts.js';

/** Everything under `dir`: relative path -> file content, link target or "dir". */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (rel: string) => {
    for (const name of await readdir(join(dir, rel))) {
      const path = join(dir, rel, name);
      const st = await lstat(path);
      const key = join(rel, name);
      if (st.isSymbolicLink()) out[key] = `link:${await readlink(path)}`;
      else if (st.isDirectory()) { out[key] = `dir:${(st.mode & 0o777).toString(8)}`; await walk(key); }
      else out[key] = `file:${(st.mode & 0o777).toString(8)}:${await readFile(path, 'utf8')}`;
    }
  };
  await walk('');
  return out;
}

const request = (name: string) => createRequest(name, {}, { createdAt: '2026-01-01T00:00:00.000Z', createdBy: 'node-a' });

describe('vfs on a hostile store', () => {
  let base = '';
  let outside = '';
  let store = '';
  let before: Record<string, string> = {};
  afterEach(async () => {
    // Whatever the store did, nothing outside it changed.
    expect(await snapshot(outside)).toEqual(before);
    await rm(base, { recursive: true, force: true });
  });

  async function setup(): Promise<void> {
    base = await mkdtemp(join(tmpdir(), 'stowage-hostile-'));
    outside = join(base, 'outside');
    store = join(base, 'store');
    await mkdir(join(outside, 'victim@20260101T000000Z-abcdef', 'deep'), { recursive: true });
    await writeFile(join(outside, 'victim@20260101T000000Z-abcdef', 'deep', 'canary'), 'do not delete');
    await writeFile(join(outside, 'canary.txt'), 'precious');
    await writeFile(join(outside, 'entry.json'), JSON.stringify({
      format: 1, dataDir: 'stolen', record: { name: 'stolen', options: {}, createdAt: 'x', createdBy: 'y' },
    }));
    before = await snapshot(outside);
  }

  function backend(log: MemoryLogger = memoryLogger()): VfsBackend {
    return new VfsBackend({ nodeId: 'node-a', root: join(base, 'root'), fs: realFs, runner: new ExecaCommandRunner(), log },
      parseVfsOptions({ 'vfs.path': store }, join(base, 'root')));
  }

  async function initialised(): Promise<VfsBackend> {
    const b = backend();
    await b.init();
    await b.create(request('good'));
    await b.dispose();
    return b;
  }

  it('answers "unavailable", never "no such volume", for a name asked of a store that is no longer there (unmounted)', async () => {
    await setup();
    const b = backend();
    await b.init();
    await b.create(request('kept'));
    // What an unmount leaves at the path: the empty directory the filesystem was mounted on.
    await rename(store, join(base, 'store.away'));
    await mkdir(store);
    for (const name of ['kept', 'never-made']) {
      await expect(b.get(name)).rejects.toMatchObject({
        code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/is missing: is the store's filesystem still mounted\?|is not visible at .*; is the filesystem still mounted\?/),
      });
    }
    await rm(store, { recursive: true });
    await rename(join(base, 'store.away'), store);
    expect((await b.get('kept'))?.name).toBe('kept');
    expect(await b.get('never-made')).toBeUndefined();
    await b.dispose();
  });

  it('refuses a store deleted and made again at vfs.path (same filesystem) while it runs, and goes on with its own put back from a copy', async () => {
    await setup();
    const b = backend();
    await b.init();
    await b.create(request('kept'));
    await writeFile(join(store, 'kept', 'data'), 'kept');
    // Put back from a copy: the same store id, every file and directory a new inode.
    expect(spawnSync('cp', ['-a', store, `${store}.copy`]).status).toBe(0);
    await rm(store, { recursive: true });
    await rename(`${store}.copy`, store);
    expect((await b.get('kept'))?.name).toBe('kept');
    await b.remove('kept', { retain: false });
    await b.create(request('again'));
    // Deleted, and made again by another node's start: a store this daemon's records are not about.
    await rm(store, { recursive: true });
    await mkdir(store);
    const other = new VfsBackend({ nodeId: 'node-b', root: join(base, 'root-b'), fs: realFs, runner: new ExecaCommandRunner(), log: memoryLogger() },
      parseVfsOptions({ 'vfs.path': store }, join(base, 'root-b')));
    await other.init();
    await other.dispose();
    const refused = { code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/now holds stowage store [0-9a-f]+, not store [0-9a-f]+ that this daemon started on/) };
    await expect(b.get('again')).rejects.toMatchObject(refused);
    await expect(b.list()).rejects.toMatchObject(refused);
    await expect(b.create(request('new'))).rejects.toMatchObject(refused);
    await expect(b.remove('again', { retain: false })).rejects.toMatchObject(refused);
    await b.dispose();
  });

  it('never answers "no such volume" when volumes/ is a symlink to a directory without the entry', async () => {
    await setup();
    const b = backend();
    await b.init();
    await b.create(request('v1'));
    await writeFile(join(store, 'v1', 'data'), 'kept');
    const volumes = join(store, '.stowage', 'volumes');
    await mkdir(join(base, 'empty'));
    await rename(volumes, `${volumes}.real`);
    await symlink(join(base, 'empty'), volumes);
    // Docker forgets a volume it is told is gone, and makes a local one of the name at the next run.
    for (const name of ['v1', 'never-made']) {
      await expect(b.get(name)).rejects.toMatchObject({ code: ErrorCodes.STATE_CORRUPT, message: expect.stringMatching(/volumes is a symbolic link/) });
      await expect(b.remove(name, { retain: false })).rejects.toMatchObject({ code: ErrorCodes.STATE_CORRUPT });
    }
    // The same create again finds v1's data: never said to belong to no volume, never adopted.
    await expect(b.create(request('v1'))).rejects.toMatchObject({ code: ErrorCodes.STATE_CORRUPT, message: expect.stringMatching(/volumes is a symbolic link/) });
    await rm(volumes);
    await rename(`${volumes}.real`, volumes);
    expect((await b.get('v1'))?.name).toBe('v1');
    expect(await readFile(join(store, 'v1', 'data'), 'utf8')).toBe('kept');
    await b.dispose();
  });

  it('a FIFO planted as a name\'s intent record refuses that name, saying how to free it, and is never opened', async () => {
    await setup();
    const b = backend();
    await b.init();
    expect(spawnSync('mkfifo', [join(store, '.stowage', 'journal', 'v2.json')]).status).toBe(0);
    await expect(b.create(request('v2'))).rejects.toMatchObject({
      code: ErrorCodes.STATE_CORRUPT,
      message: expect.stringMatching(/journal\/v2\.json is not a regular file \(a FIFO\); stowage does not follow or touch it: stowage never writes a record like it; move it away by hand .*then try again/),
    });
    await rm(join(store, '.stowage', 'journal', 'v2.json'));
    expect((await b.create(request('v2'))).name).toBe('v2');
    await b.dispose();
  });

  for (const dir of ['journal', 'volumes', 'deleting']) {
    it(`writes, moves or unlinks nothing through .stowage/${dir} made a symlink while it runs`, async () => {
      await setup();
      // Names a create of foo and a remove of v1 would write, read or unlink there.
      for (const file of ['foo.json', 'v1.json', '.epoch']) await writeFile(join(outside, file), `precious ${file}`);
      before = await snapshot(outside);
      const b = backend();
      await b.init();
      await b.create(request('v1'));
      await rename(join(store, '.stowage', dir), join(store, '.stowage', `${dir}.real`));
      await symlink(outside, join(store, '.stowage', dir));
      // A create touches no deleting/.
      if (dir === 'deleting') await b.create(request('foo'));
      else await expect(b.create(request('foo'))).rejects.toMatchObject({ code: ErrorCodes.STATE_CORRUPT });
      await expect(b.remove('v1', { retain: false })).rejects.toMatchObject({ code: ErrorCodes.STATE_CORRUPT });
      await b.dispose();
      // The volume is as it was once the directory is put back.
      await rm(join(store, '.stowage', dir));
      await rename(join(store, '.stowage', `${dir}.real`), join(store, '.stowage', dir));
      expect(await readdir(join(store, 'v1'))).toEqual([]);
    });
  }

  it('removes racing volumes/ and deleting/ swapped back and forth for symlinks never move data out nor unlink what is there', async () => {
    await setup();
    for (let i = 0; i < 40; i += 1) await writeFile(join(outside, `r${i}.json`), `precious r${i}`);
    before = await snapshot(outside);
    const b = backend();
    await b.init();
    for (let i = 0; i < 40; i += 1) {
      await b.create(request(`r${i}`));
      await writeFile(join(store, `r${i}`, 'data'), `r${i}'s`);
    }
    const meta = join(store, '.stowage');
    const swapper = swapForSymlinks(['volumes', 'deleting'].map((dir) => join(meta, dir)), outside);
    const removed: string[] = [];
    for (let i = 0; i < 40; i += 1) {
      await b.remove(`r${i}`, { retain: false }).then(() => removed.push(`r${i}`), () => undefined);
    }
    expect(await swapper.done).toBe(0);
    await b.settle();
    await b.dispose();
    // A remove whose data moved but whose entry could not be unlinked, nor the data put back (the
    // link in place at both moments), left its intent record: the next start finishes it.
    const restarted = backend();
    await restarted.init();
    await restarted.settle();
    // A volume is either whole (entry and data) or gone (both), and one whose remove answered
    // success is gone: a remove that found no entry by its path (the link in place when it looked)
    // is refused, never answered as for a volume already gone.
    expect(removed.length).toBeGreaterThan(0);
    for (let i = 0; i < 40; i += 1) {
      const listed = await restarted.get(`r${i}`).then((e) => e !== undefined);
      expect(await readFile(join(store, `r${i}`, 'data'), 'utf8').catch(() => 'none')).toBe(listed ? `r${i}'s` : 'none');
      if (removed.includes(`r${i}`)) expect({ volume: `r${i}`, listed }).toEqual({ volume: `r${i}`, listed: false });
    }
    await restarted.dispose();
  });

  for (const dir of ['.stowage', '.stowage/volumes', '.stowage/removed', '.stowage/deleting', '.stowage/journal',
    '.stowage/cluster', '.stowage/cluster/members', '.stowage/cluster/mounts', '.stowage/cluster/locks']) {
    it(`refuses to start when ${dir} is a symlink out of the store, naming it`, async () => {
      await setup();
      await initialised();
      const path = join(store, dir);
      await rename(path, `${path}.moved`);
      await symlink(outside, path);
      await expect(backend().init()).rejects.toMatchObject({
        code: ErrorCodes.STATE_CORRUPT, message: expect.stringContaining(`${path} is a symbolic link`),
      });
    });
  }

  it('refuses an internal directory that is a plain file', async () => {
    await setup();
    await initialised();
    await rm(join(store, '.stowage', 'journal'), { recursive: true });
    await writeFile(join(store, '.stowage', 'journal'), 'x');
    await expect(backend().init()).rejects.toThrow(/journal is not a directory/);
  });

  it('refuses a store marker that is a symlink', async () => {
    await setup();
    await initialised();
    await rm(join(store, '.stowage', 'store.json'));
    await symlink(join(outside, 'entry.json'), join(store, '.stowage', 'store.json'));
    await expect(backend().init()).rejects.toThrow(/store\.json is a symbolic link/);
  });

  it('purges only real directories named as stowage names them, never through symlinks', async () => {
    await setup();
    await initialised();
    const deleting = join(store, '.stowage', 'deleting');
    await symlink(join(outside, 'victim@20260101T000000Z-abcdef'), join(deleting, 'link@20260101T000000Z-abcdef'));
    await mkdir(join(deleting, 'real@20260101T000000Z-abcdef'));
    await symlink(outside, join(deleting, 'real@20260101T000000Z-abcdef', 'escape'));
    await writeFile(join(deleting, 'real@20260101T000000Z-abcdef', 'junk'), 'x');
    await mkdir(join(deleting, 'not-ours'));
    const log = memoryLogger();
    const b = backend(log);
    await b.init();
    await b.settle();
    // The symlink inside the purged tree went as a link; the link at top level stays, reported.
    expect((await readdir(deleting)).sort()).toEqual(['link@20260101T000000Z-abcdef', 'not-ours']);
    expect(log.lines.join('\n')).toMatch(/leaving .*link@20260101T000000Z-abcdef alone: .* is a symbolic link/);
    expect(log.lines.join('\n')).toMatch(/leaving .*not-ours alone: stowage did not put it there/);
  });

  it('skips and reports registry entries that are symlinks, corrupt or point outside; lists the rest', async () => {
    await setup();
    await initialised();
    const volumes = join(store, '.stowage', 'volumes');
    await symlink(join(outside, 'entry.json'), join(volumes, 'stolen.json'));
    await symlink(join(outside, 'canary.txt'), join(volumes, '.epoch'));
    const evil = (name: string, dataDir: string, recordName = name) => writeFile(join(volumes, `${name}.json`),
      JSON.stringify({ format: 1, dataDir, record: { name: recordName, options: {}, createdAt: 'x', createdBy: 'y' } }));
    await evil('up', '../outside');
    await evil('abs', '/etc');
    await evil('nested', 'a/b');
    await evil('dotted', '.stowage');
    await evil('renamed', 'renamed', 'other');
    await evil('alias', 'good'); // would hand out (and remove) another volume's data
    await writeFile(join(volumes, 'broken.json'), '{"format": 1, ');
    expect(spawnSync('mkfifo', [join(volumes, 'fifo.json')]).status).toBe(0); // would block a plain open
    await writeFile(join(store, 'good', 'marker'), 'good data');
    const log = memoryLogger();
    const b = backend(log);
    await b.init();
    expect((await b.list()).map((v) => v.name)).toEqual(['good']);
    expect((await b.list()).map((v) => v.name)).toEqual(['good']);
    const text = log.lines.join('\n');
    for (const name of ['stolen', 'up', 'abs', 'nested', 'dotted', 'renamed', 'alias', 'broken', 'fifo']) {
      expect(text).toMatch(new RegExp(`skipping registry entry ${name}: `));
      await expect(b.attach(name)).rejects.toMatchObject({ code: ErrorCodes.STATE_CORRUPT });
      await expect(b.remove(name, { retain: false })).rejects.toMatchObject({ code: ErrorCodes.STATE_CORRUPT });
    }
    expect(text).toMatch(/stolen\.json is a symbolic link/);
    expect(text).toMatch(/skipping registry entry \.epoch: .*\.epoch is a symbolic link/);
    // Reported once, not at every List.
    expect(text.match(/skipping registry entry up:/g)).toHaveLength(1);
    expect(await readFile(join(store, 'good', 'marker'), 'utf8')).toBe('good data');
    await b.settle();
  });

  it.runIf(process.getuid?.() === 0)('never opens a device planted as a registry entry (its driver would run on this host)', async () => {
    await setup();
    await initialised();
    // Major 240 is for local use: no driver here, so an open of it fails with ENXIO.
    expect(spawnSync('mknod', [join(store, '.stowage', 'volumes', 'planted.json'), 'c', '240', '0']).status).toBe(0);
    const log = memoryLogger();
    const b = backend(log);
    await b.init();
    expect((await b.list()).map((v) => v.name)).toEqual(['good']);
    expect(log.lines.join('\n')).toMatch(/skipping registry entry planted: .*planted\.json is not a regular file \(a character device\)/);
    await expect(b.attach('planted')).rejects.toMatchObject({
      code: ErrorCodes.STATE_CORRUPT, message: expect.stringContaining('is not a regular file (a character device)'),
    });
    await b.settle();
  });

  it('never hands out, moves or deletes a volume whose data directory became a symlink, nor its snapshots', async () => {
    await setup();
    await initialised();
    const b = backend();
    await b.init();
    await writeFile(join(store, 'good', 'data'), 'kept in a snapshot');
    await b.snapshots.createSnapshot('good', 'before');
    await rm(join(store, 'good'), { recursive: true });
    await symlink(outside, join(store, 'good'));
    await expect(b.attach('good')).rejects.toMatchObject({ code: ErrorCodes.STATE_CORRUPT, message: expect.stringMatching(/symbolic link/) });
    await expect(b.remove('good', { retain: false })).rejects.toMatchObject({ code: ErrorCodes.STATE_CORRUPT });
    await b.settle();
    expect((await lstat(join(store, 'good'))).isSymbolicLink()).toBe(true);
    expect((await b.list()).map((v) => v.name)).toEqual(['good']);
    // A remove that was refused deleted nothing: the snapshot is the volume's data now.
    expect((await b.snapshots.listSnapshots('good')).map((s) => s.name)).toEqual(['before']);
  });

  it('refuses to create over a planted symlink where the data would go', async () => {
    await setup();
    await initialised();
    const b = backend();
    await b.init();
    await symlink(outside, join(store, 'fresh'));
    await expect(b.create(createRequest('fresh', { adopt: true, mode: 0o777 }, { createdAt: '2026-01-01T00:00:00.000Z', createdBy: 'node-a' })))
      .rejects.toMatchObject({ code: ErrorCodes.DATA_CONFLICT });
    expect(await b.get('fresh')).toBeUndefined();
  });

  it('ignores hostile intent records: a traversal target or another volume\'s name changes nothing outside', async () => {
    await setup();
    await initialised();
    const journal = join(store, '.stowage', 'journal');
    await writeFile(join(journal, 'good.json'), JSON.stringify({
      format: 1, op: 'remove', name: 'good', nodeId: 'node-a', createdAt: '2026-01-01T00:00:00.000Z', createdBy: 'node-a',
      target: '../../outside/victim@20260101T000000Z-abcdef',
    }));
    // Old enough to be discarded at start (a young unreadable one may be a write in progress).
    const old = new Date(Date.now() - 60_000);
    await utimes(join(journal, 'good.json'), old, old);
    await symlink(join(outside, 'entry.json'), join(journal, 'other.json'));
    const log = memoryLogger();
    const b = backend(log);
    await b.init();
    await b.settle();
    expect((await b.list()).map((v) => v.name)).toEqual(['good']);
    expect(log.lines.join('\n')).toMatch(/discarding an unreadable intent record for volume good/);
    expect(log.lines.join('\n')).toMatch(/other\.json is a symbolic link/);
  });
});

const noMounts = systemSuite('mounts in a vfs store', process.getuid?.() === 0 && findExecutable('mount') && findExecutable('umount')
  ? { ok: true } : { ok: false, why: 'needs root to mount a tmpfs and bind-mount directories' });

describe.skipIf(noMounts)('vfs purge and mounts', () => {
  let base = '';
  const mount = (...args: string[]) => {
    const done = spawnSync('mount', args, { encoding: 'utf8' });
    if (done.status !== 0) throw new Error(`mount ${args.join(' ')}: ${done.stderr}`);
  };
  const unmount = (path: string) => {
    const done = spawnSync('umount', [path], { encoding: 'utf8' });
    if (done.status !== 0) throw new Error(`umount ${path}: ${done.stderr}`);
  };
  afterEach(async () => {
    if (base === '') return;
    // Wherever a remove moved them, innermost first: rm would delete through a mount left in place.
    const real = await realpath(base);
    const mounts = parseMountinfo(await readFile('/proc/self/mountinfo', 'utf8')).map((m) => m.mountPoint);
    for (const path of mounts.filter((m) => m.startsWith(`${real}/`)).reverse()) unmount(path);
    await rm(base, { recursive: true, force: true });
    base = '';
  });
  const make = (log = memoryLogger()) => new VfsBackend({ nodeId: 'node-a', root: join(base, 'root'), fs: realFs, runner: new ExecaCommandRunner(), log },
    parseVfsOptions({ 'vfs.path': join(base, 'store') }, join(base, 'root')));
  /** A directory with a file, on the store's filesystem but outside the store. */
  async function decoy(): Promise<string> {
    const dir = join(base, 'decoy');
    await mkdir(join(dir, 'sub'), { recursive: true });
    await writeFile(join(dir, 'p'), 'not the volume\'s');
    await writeFile(join(dir, 'sub', 'q'), 'nor this');
    return dir;
  }

  it('never deletes into a filesystem mounted inside what it purges', async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-mnt-'));
    const store = join(base, 'store');
    const first = make();
    await first.init();
    const moved = join(store, '.stowage', 'deleting', 'vol@20260101T000000Z-abcdef');
    await mkdir(join(moved, 'mnt'), { recursive: true });
    await writeFile(join(moved, 'own'), 'x');
    mount('-t', 'tmpfs', 'tmpfs', join(moved, 'mnt'));
    await writeFile(join(moved, 'mnt', 'canary'), 'other filesystem');
    const log = memoryLogger();
    const restarted = make(log);
    await restarted.init();
    await restarted.settle();
    expect(await readFile(join(moved, 'mnt', 'canary'), 'utf8')).toBe('other filesystem');
    expect(await readdir(moved)).toEqual(['mnt']);
    expect(log.lines.join('\n')).toMatch(/left .*mnt in place: another filesystem is mounted there/);
  });

  it('never deletes through a bind mount of a directory of the same filesystem inside a removed volume, and finishes once it is unmounted', async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-bind-'));
    const outside = await decoy();
    const log = memoryLogger();
    const b = make(log);
    await b.init();
    await b.create(request('vol'));
    const data = await b.attach('vol');
    await mkdir(join(data, 'deep', 'mnt'), { recursive: true });
    await writeFile(join(data, 'deep', 'own'), 'the volume\'s');
    mount('--bind', outside, join(data, 'deep', 'mnt'));
    await b.remove('vol', { retain: false });
    await b.settle();
    expect(await snapshot(outside)).toEqual({ p: 'file:644:not the volume\'s', sub: 'dir:755', 'sub/q': 'file:644:nor this' });
    const deleting = join(base, 'store', '.stowage', 'deleting');
    const [left] = await readdir(deleting);
    // The volume's own files went; only the way to the mount point stays.
    expect(await readdir(join(deleting, left!))).toEqual(['deep']);
    expect(await readdir(join(deleting, left!, 'deep'))).toEqual(['mnt']);
    expect(log.lines.join('\n')).toMatch(/left .*deep\/mnt in place: it is a bind mount .*unmount it and restart to finish/);
    expect(log.lines.join('\n')).not.toMatch(/could not finish deleting/);
    await b.dispose();

    unmount(join(deleting, left!, 'deep', 'mnt'));
    const restarted = make();
    await restarted.init();
    await restarted.settle();
    expect(await readdir(deleting)).toEqual([]);
    expect(await snapshot(outside)).toEqual({ p: 'file:644:not the volume\'s', sub: 'dir:755', 'sub/q': 'file:644:nor this' });
  });

  it('never deletes through a bind mount made inside a removed volume while its delete runs, and reports each one left', async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-race-'));
    const decoys = join(base, 'decoy');
    const files = (n: number) => Array.from({ length: n }, (_, i) => `f${i}`);
    for (let d = 0; d < 20; d += 1) {
      const nn = String(d).padStart(2, '0');
      await mkdir(join(decoys, nn, 'sub'), { recursive: true });
      await writeFile(join(decoys, nn, 'a'), `decoy ${nn}`);
      await writeFile(join(decoys, nn, 'b'), `decoy ${nn}`);
      await writeFile(join(decoys, nn, 'sub', 'c'), `decoy ${nn}`);
    }
    const before = await snapshot(decoys);
    expect(Object.keys(before).length).toBe(100);
    const deleting = join(base, 'store', '.stowage', 'deleting');

    /** One remove raced by bind mounts; what was mounted, and what the delete reported. */
    async function race(volume: string): Promise<{ mounted: string[]; report: string }> {
      const log = memoryLogger();
      const b = make(log);
      await b.init();
      await b.create(request(volume));
      const data = await b.attach(volume);
      for (let d = 0; d < 20; d += 1) {
        const nn = String(d).padStart(2, '0');
        // Many entries, so the delete is still running when the mounts are made, some inside a directory it has open.
        await mkdir(join(data, `d${nn}`));
        await Promise.all(files(150).map((f) => writeFile(join(data, `d${nn}`, f), 'the volume\'s')));
        await mkdir(join(data, `filler${nn}`));
        await Promise.all(files(150).map((f) => writeFile(join(data, `filler${nn}`, f), 'the volume\'s')));
      }
      // As another process on the host would: wait for the moved-aside directory, then mount into it.
      const mounter = spawn('sh', ['-c', `
        for i in $(seq 2000); do for moved in "$0"/$2@*; do :; done; [ -d "$moved" ] && break; sleep 0.005; done
        for nn in $(seq -w 0 19); do mount --bind "$1/$nn" "$moved/d$nn" 2>/dev/null && echo "$moved/d$nn"; done`, deleting, decoys, volume],
      { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      mounter.stdout.on('data', (chunk: Buffer) => { out += chunk.toString(); });
      const exited = new Promise((resolve) => mounter.on('close', resolve));
      await b.remove(volume, { retain: false });
      await exited;
      await b.settle();
      await b.dispose();
      return { mounted: out.split('\n').filter(Boolean), report: log.lines.join('\n') };
    }

    // On a busy machine the delete may finish before the first mount: that try proves nothing, so another is made.
    let outcome = await race('vol');
    for (let retry = 1; outcome.mounted.length === 0 && retry < 4; retry += 1) {
      expect(await snapshot(decoys)).toEqual(before);
      outcome = await race(`vol${retry}`);
    }
    expect(await snapshot(decoys)).toEqual(before);
    const { mounted, report } = outcome;
    // Some mounts landed before the delete reached their directory (else this proves nothing).
    expect(mounted.length).toBeGreaterThan(0);
    for (const path of mounted) expect(report).toContain(`${path} in place: it is a bind mount`);
    expect(report).not.toMatch(/could not finish deleting/);
  });

  it('refuses to adopt a bind-mounted directory, and to remove a volume whose directory became one, changing nothing', async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-bind-'));
    const outside = await decoy();
    const b = make();
    await b.init();
    const store = join(base, 'store');
    await mkdir(join(store, 'taken'));
    mount('--bind', outside, join(store, 'taken'));
    await expect(b.create({ ...request('taken'), adopt: true })).rejects.toMatchObject({
      code: ErrorCodes.DATA_CONFLICT, message: expect.stringContaining(`${join(store, 'taken')} is a mount point`),
    });
    expect(await b.list()).toEqual([]);

    await b.create(request('vol'));
    const data = await b.attach('vol');
    mount('--bind', outside, data);
    await expect(b.remove('vol', { retain: false })).rejects.toMatchObject({
      code: ErrorCodes.DATA_CONFLICT, message: expect.stringContaining(`${data} is a mount point`),
    });
    expect((await b.list()).map((v) => v.name)).toEqual(['vol']);
    await b.settle();
    expect(await snapshot(outside)).toEqual({ p: 'file:644:not the volume\'s', sub: 'dir:755', 'sub/q': 'file:644:nor this' });
    unmount(data);
    await b.remove('vol', { retain: false });
    await b.dispose();
  });
});

describe('vfs registry entry replaced by an invalid one', () => {
  it('stops listing the old record instead of answering from the cache', async () => {
    const base = await mkdtemp(join(tmpdir(), 'stowage-replaced-'));
    try {
      const root = join(base, 'root');
      const b = new VfsBackend({ nodeId: 'node-a', root, fs: realFs, runner: new ExecaCommandRunner(), log: memoryLogger() },
        parseVfsOptions({ 'vfs.path': join(base, 'store') }, root));
      await b.init();
      await b.create(request('vol'));
      expect((await b.list()).map((v) => v.name)).toEqual(['vol']);
      const entry = join(base, 'store', '.stowage', 'volumes', 'vol.json');
      await rm(entry);
      await writeFile(entry, JSON.stringify({ format: 1, dataDir: '../elsewhere', record: { name: 'vol' } }));
      await writeFile(join(base, 'store', '.stowage', 'volumes', '.epoch'), 'another removal');
      expect(await b.list()).toEqual([]);
      await expect(b.get('vol')).rejects.toMatchObject({ code: ErrorCodes.STATE_CORRUPT });
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });
});
