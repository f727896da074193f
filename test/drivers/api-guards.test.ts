/**
 * The embedding API as plain JavaScript calls it: options of the wrong type or shape, and an
 * instance used across close(). Real directories, the real vfs backend and backup library.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ErrorCodes, createStowage, isStowageError, type Stowage, type StowageOptions } from '../../src/index.js';
import type { Logger } from '../../src/core/logger.js';

const dirs: string[] = [];
const open: Stowage[] = [];
afterEach(async () => {
  await Promise.allSettled(open.splice(0).map((s) => s.close()));
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'stowage-api-guards-'));
  dirs.push(dir);
  return dir;
}

async function opened(dir: string, more: StowageOptions = {}): Promise<Stowage> {
  const stowage = await createStowage({ options: { 'vfs.path': join(dir, 'volumes') }, root: join(dir, 'state'), nodeId: 'n1', ...more });
  open.push(stowage);
  return stowage;
}

async function codeOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
  } catch (err) {
    if (isStowageError(err)) return err.code;
    throw err;
  }
  throw new Error('expected a refusal');
}

/** A volume with `files` files of 1 MiB of distinct bytes, enough that a backup takes a while. */
async function volumeWithData(stowage: Stowage, name: string, files: number): Promise<void> {
  await stowage.create(name);
  const path = await stowage.mount(name, 'fill');
  for (let i = 0; i < files; i += 1) await writeFile(join(path, `f${i}`), Buffer.alloc(1 << 20, i));
  await stowage.unmount(name, 'fill');
}

describe('createStowage refuses settings the daemon refuses, touching nothing', () => {
  it.each([
    ['onRemove "Retain"', { onRemove: 'Retain' }, /"onRemove" must be "delete" or "retain"/],
    ['onRemove true', { onRemove: true }, /"onRemove"/],
    ['a node id that is a path', { nodeId: '../../escaped' }, /"nodeId" "..\/..\/escaped" is not a node id/],
    ['an empty node id', { nodeId: '' }, /is not a node id/],
    ['a number for a node id', { nodeId: 5 }, /"nodeId" must be a string/],
    ['a relative root', { root: 'rel/root' }, /"root" "rel\/root" must be an absolute path/],
    ['/ as root', { root: '/' }, /must be an absolute path other than \//],
    ['a backend that is neither', { backend: 42 }, /"backend" must be a backend name/],
    ['an unknown setting', { nodeid: 'n1' }, /unknown option "nodeid"/],
    ['a Map of backend options', { options: new Map([['vfs.path', '/tmp/x']]) }, /"options" must be an object/],
  ])('%s', async (_what, bad, message) => {
    const dir = await tempDir();
    const settings = { root: join(dir, 'state'), options: { 'vfs.path': join(dir, 'volumes') }, ...bad } as unknown as StowageOptions;
    const err = await createStowage(settings).then(() => undefined, (e: unknown) => e);
    expect(isStowageError(err, ErrorCodes.INVALID_OPTION), String(err)).toBe(true);
    expect((err as Error).message).toMatch(message);
    expect(await readdir(dir)).toEqual([]);
  });

  it('refuses vfs.path at the filesystem\'s root, and a state root inside the store, in the daemon\'s words', async () => {
    const dir = await tempDir();
    await expect(createStowage({ root: join(dir, 'state'), options: { 'vfs.path': '/' } })).rejects.toThrow(/vfs.path="\/" is the filesystem's root/);
    expect(existsSync('/.stowage')).toBe(false);
    await expect(createStowage({ root: join(dir, 'volumes', 'state'), options: { 'vfs.path': join(dir, 'volumes') } }))
      .rejects.toThrow(/the state root .* is inside vfs.path .*: give the state root a directory outside the store/);
    expect(existsSync(join(dir, 'volumes', '.stowage'))).toBe(false);
  });
});

it('says a vfs.path that is a file is not a directory, in words, not an errno', async () => {
  const dir = await tempDir();
  await writeFile(join(dir, 'afile'), 'x');
  for (const path of [join(dir, 'afile'), join(dir, 'afile', 'below')]) {
    const err = await createStowage({ root: join(dir, 'state'), options: { 'vfs.path': path } }).then(() => undefined, (e: unknown) => e);
    expect(isStowageError(err, ErrorCodes.INVALID_OPTION), String(err)).toBe(true);
    expect((err as Error).message).toContain(`vfs.path ${path} is not a directory, nor a path one can be made at`);
  }
});

it('a volume whose directory was replaced by a file is not removed, and the error says what to do; the file is untouched', async () => {
  const dir = await tempDir();
  const stowage = await opened(dir);
  await stowage.create('handfile');
  const data = join(dir, 'volumes', 'handfile');
  await rm(data, { recursive: true });
  await writeFile(data, 'someone else\'s');
  const err = await stowage.remove('handfile', { force: true }).then(() => undefined, (e: unknown) => e);
  expect(isStowageError(err, ErrorCodes.STATE_CORRUPT), String(err)).toBe(true);
  expect((err as Error).message).toContain(`${data} is not a directory; stowage does not follow or touch it: it was put there outside stowage; move it away by hand, then try again`);
  expect(await readFile(data, 'utf8')).toBe('someone else\'s');
  await rm(data);
  expect((await stowage.remove('handfile')).name).toBe('handfile');
});

describe('a call\'s options are checked before anything is done', () => {
  it('remove takes booleans only: a string "false" does not force, it is refused and the volume stays', async () => {
    const dir = await tempDir();
    const stowage = await opened(dir);
    await stowage.create('kept');
    for (const bad of [{ force: 'false' }, { retain: 'no' }, { retain: 0 }, { forse: true }]) {
      expect(await codeOf(stowage.remove('kept', bad as never))).toBe(ErrorCodes.INVALID_REQUEST);
    }
    await expect(stowage.remove('kept', new Map() as never)).rejects.toThrow(/remove: the options must be an object literal/);
    expect((await stowage.list()).map((v) => v.name)).toEqual(['kept']);
  });

  it('create takes an object literal of options: a Map or inherited properties are refused, nothing made', async () => {
    const dir = await tempDir();
    const stowage = await opened(dir);
    expect(await codeOf(stowage.create('m1', new Map([['size', '1G']]) as never))).toBe(ErrorCodes.INVALID_OPTION);
    expect(await codeOf(stowage.create('m2', Object.create({ size: '1G' }) as never))).toBe(ErrorCodes.INVALID_OPTION);
    expect(await stowage.list()).toEqual([]);
  });

  it('snapshot and backup options: unknown keys and wrong types are refused, naming them', async () => {
    const dir = await tempDir();
    const stowage = await opened(dir);
    await stowage.create('vol');
    await expect(stowage.createSnapshot('vol', 's1', { bogus: 1 } as never)).rejects.toThrow(/createSnapshot: unknown option "bogus"/);
    await expect(stowage.createSnapshot('vol', 's1', { consistent: 'yes' } as never)).rejects.toThrow(/"consistent" must be true or false/);
    await expect(stowage.createBackup('vol', undefined as never)).rejects.toThrow(/createBackup: "dest" must be a string/);
    const dest = `vfs://${join(dir, 'backups')}`;
    await expect(stowage.createBackup('vol', { dest, xattrs: 'false' } as never)).rejects.toThrow(/"xattrs" must be true or false/);
    await expect(stowage.listBackups(dest, { vol: 'vol' } as never)).rejects.toThrow(/listBackups: unknown option "vol"/);
    await expect(stowage.restoreVolume('r', `${dest}?volume=vol&backup=x`, { signal: 'x' } as never)).rejects.toThrow(/"signal" must be an AbortSignal/);
    expect(await stowage.listSnapshots('vol')).toEqual([]);
    expect(existsSync(join(dir, 'backups'))).toBe(false);
    expect((await stowage.list()).map((v) => v.name)).toEqual(['vol']);
  });
});

describe('cancelling, progress callbacks and close()', () => {
  it('an aborted signal fails a backup and a restore with E_CANCELLED, leaving no backup and no volume', async () => {
    const dir = await tempDir();
    const stowage = await opened(dir);
    await volumeWithData(stowage, 'vol', 4);
    const dest = `vfs://${join(dir, 'backups')}`;
    expect(await codeOf(stowage.createBackup('vol', { dest, signal: AbortSignal.abort() }))).toBe(ErrorCodes.CANCELLED);
    const made = await stowage.createBackup('vol', { dest });
    expect(await codeOf(stowage.restoreVolume('copy', made.url, { signal: AbortSignal.abort('mine') }))).toBe(ErrorCodes.CANCELLED);
    expect((await stowage.list()).map((v) => v.name)).toEqual(['vol']);
    expect((await stowage.listBackups(dest)).map((b) => b.url)).toEqual([made.url]);
  });

  it('a progress callback that throws is logged once and the backup completes', async () => {
    const dir = await tempDir();
    const warnings: string[] = [];
    const logger: Logger = { info: () => {}, error: () => {}, warn: (m) => warnings.push(m) };
    const stowage = await opened(dir, { logger });
    await volumeWithData(stowage, 'vol', 3);
    let calls = 0;
    const made = await stowage.createBackup('vol', { dest: `vfs://${join(dir, 'backups')}`, onProgress: () => { calls += 1; throw new Error('boom from progress'); } });
    expect(made.state).toBe('complete');
    expect(made.stats?.files).toBe(3);
    expect(calls).toBeGreaterThan(1);
    expect(warnings.filter((w) => w.includes('boom from progress'))).toHaveLength(1);
  });

  it('close() cancels a running backup and waits for it; the closed instance refuses every call, and closing again is the same close', async () => {
    const dir = await tempDir();
    const stowage = await opened(dir);
    await volumeWithData(stowage, 'big', 64);
    const dest = `vfs://${join(dir, 'backups')}`;
    const backup = stowage.createBackup('big', { dest });
    const settled = backup.then(() => 'complete', (err: unknown) => (isStowageError(err) ? err.code : String(err)));
    await new Promise((r) => setTimeout(r, 50));
    let backupSettledFirst = false;
    void settled.then(() => { backupSettledFirst = true; });
    await Promise.all([stowage.close(), stowage.close()]);
    expect(backupSettledFirst).toBe(true);
    expect(await settled).toBe(ErrorCodes.CANCELLED);
    for (const call of [() => stowage.list(), () => stowage.mount('big', 'late'), () => stowage.create('late'), () => stowage.remove('big')]) {
      await expect(call()).rejects.toThrow(/this stowage instance is closed/);
    }
    // The next instance on the same root finds the volume whole and no backup recorded.
    const next = await opened(dir);
    expect((await next.list()).map((v) => [v.name, v.mountCount])).toEqual([['big', 0]]);
    expect((await next.listBackups(dest)).filter((b) => b.state === 'complete')).toEqual([]);
    expect(await readdir(join(await next.mount('big', 'check'), '.'))).toHaveLength(64);
  });

  it('a second daemon under a node id another one heartbeats with on the store is refused; the same root restarting is not', async () => {
    const dir = await tempDir();
    const store = { 'vfs.path': join(dir, 'volumes') };
    const first = await createStowage({ options: store, root: join(dir, 'root-a'), nodeId: 'n1' });
    open.push(first);
    await first.create('busy');
    const path = await first.mount('busy', 'container-1');
    await writeFile(join(path, 'precious'), 'in use');
    const twin = await createStowage({ options: store, root: join(dir, 'root-b'), nodeId: 'n1' }).then(() => undefined, (e: unknown) => e);
    expect(isStowageError(twin, ErrorCodes.INVALID_OPTION), String(twin)).toBe(true);
    expect((twin as Error).message).toMatch(/node id n1 is in use on this store by another stowage daemon \(host .*, pid \d+\): every node sharing a store needs its own node id.*last heartbeat \(\d+ s ago\)/);
    // Another id sees the volume in use and refuses its remove.
    const other = await opened(dir, { root: join(dir, 'root-c'), nodeId: 'n2' });
    expect(await codeOf(other.remove('busy'))).toBe(ErrorCodes.VOLUME_IN_USE);
    // The first node's own restart (its root, its instance) takes its id back at once.
    await first.close();
    const again = await opened(dir, { root: join(dir, 'root-a'), nodeId: 'n1' });
    expect((await again.inspect('busy')).name).toBe('busy');
    expect(existsSync(join(path, 'precious'))).toBe(true);
  });

  it('a second daemon under the same node id is refused whatever its own clock says (ages are on the storage\'s clock)', async () => {
    const dir = await tempDir();
    const store = { 'vfs.path': join(dir, 'volumes') };
    await opened(dir, { options: store, root: join(dir, 'root-a'), nodeId: 'n1' });
    vi.useFakeTimers({ toFake: ['Date'], now: Date.now() + 40_000 });
    try {
      await expect(createStowage({ options: store, root: join(dir, 'root-b'), nodeId: 'n1' })).rejects.toThrow(/node id n1 is in use on this store/);
    } finally {
      vi.useRealTimers();
    }
  });

  it('a backup waiting behind another of the same volume and repository is cancelled at once; the first goes on', async () => {
    const dir = await tempDir();
    const stowage = await opened(dir);
    await volumeWithData(stowage, 'big', 48);
    const dest = `vfs://${join(dir, 'backups')}`;
    let firstDone = false;
    const first = stowage.createBackup('big', { dest }).then((b) => { firstDone = true; return b; });
    const waiting = new AbortController();
    const second = stowage.createBackup('big', { dest, signal: waiting.signal });
    await new Promise((r) => setTimeout(r, 20));
    waiting.abort();
    expect(await codeOf(second)).toBe(ErrorCodes.CANCELLED);
    expect(firstDone).toBe(false);
    expect((await first).state).toBe('complete');
    expect((await stowage.listBackups(dest)).map((b) => b.state)).toEqual(['complete']);
  });

  it('close() cancels a restore asked for as create(name, { backup }), leaving no volume; an aborted verify fails as cancelled', async () => {
    const dir = await tempDir();
    const stowage = await opened(dir);
    await volumeWithData(stowage, 'big', 48);
    const made = await stowage.createBackup('big', { dest: `vfs://${join(dir, 'backups')}` });
    expect(await codeOf(stowage.verifyBackup(made.url, { signal: AbortSignal.abort() }))).toBe(ErrorCodes.CANCELLED);
    const restoring = stowage.create('copy', { backup: made.url });
    await new Promise((r) => setTimeout(r, 50));
    await stowage.close();
    expect(await codeOf(restoring)).toBe(ErrorCodes.CANCELLED);
    const next = await opened(dir);
    expect((await next.list()).map((v) => v.name)).toEqual(['big']);
  });

  it('option maps hold strings only: a number or a boolean is refused, not taken', async () => {
    const dir = await tempDir();
    await expect(createStowage({ root: join(dir, 'state'), options: { 'vfs.shared': true } as never })).rejects.toThrow(/"options" must be an object of names to string values/);
    const stowage = await opened(dir);
    await expect(stowage.restoreVolume('rr', 'vfs:///nowhere?volume=vol&backup=x', { volumeOptions: { size: 5 } as never }))
      .rejects.toThrow(/"volumeOptions" must be an object of names to string values/);
  });

  it('a state root inside the store that an earlier run used starts, with an error in the log; a new one is refused', async () => {
    const dir = await tempDir();
    const errors: string[] = [];
    const logger: Logger = { info: () => {}, warn: () => {}, error: (m) => errors.push(m) };
    const inside = join(dir, 'volumes', 'state');
    await mkdir(inside, { recursive: true });
    await writeFile(join(inside, 'node-instance'), `${'a'.repeat(32)}\n`);
    const stowage = await opened(dir, { root: inside, logger });
    expect(await stowage.list()).toEqual([]);
    expect(errors.some((e) => e.includes(`the state root ${inside} is inside vfs.path`))).toBe(true);
    // A volume of the root's name cannot adopt it, which would delete it with the volume.
    await expect(stowage.create('state', { adopt: 'true' })).rejects.toThrow(/holds this node's state root .*: it is never a volume's data/);
    expect(existsSync(join(inside, 'node-instance'))).toBe(true);
    expect(await stowage.list()).toEqual([]);
  });

  it('a second instance on a root in use in the same process is told to close the first', async () => {
    const dir = await tempDir();
    await opened(dir);
    await expect(opened(dir)).rejects.toThrow(/another stowage instance in this process uses the state root .*; close it first/);
  });
});
