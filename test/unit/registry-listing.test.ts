import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { VolumeRegistry } from '../../src/backends/vfs/registry.js';
import type { RegistryEntry } from '../../src/backends/vfs/registry-entry.js';
import { settleTimeOf } from '../../src/backends/vfs/directory-times.js';
import type { FsPort } from '../../src/core/fs-port.js';
import { asFsPort, LocalFirstFs } from '../../src/core/local-fs.js';
import { silentLogger } from '../../src/core/logger.js';

function entry(name: string, createdBy: string): RegistryEntry {
  return { format: 1, record: { name, options: {}, createdAt: new Date().toISOString(), createdBy }, dataDir: name };
}

/** A port on the real filesystem that counts readdir calls on the registry directory. */
function countingPort(root: string, dir: string): { port: FsPort; readdirs: () => number } {
  const local = new LocalFirstFs();
  local.trustIfLocal(root);
  const port = asFsPort(local);
  const spy = vi.spyOn(port, 'readdir');
  return { port, readdirs: () => spy.mock.calls.filter(([path]) => path === dir).length };
}

/**
 * Sets the directory's times `offsetMs` from now, with digits below the millisecond (as a
 * filesystem with nanosecond times stamps them) or in whole milliseconds. touch, because
 * Node's utimes keeps milliseconds only.
 */
function stamp(dir: string, offsetMs: number, fine: boolean): void {
  const ms = Math.round(Date.now() + offsetMs);
  const ns = `${String(ms % 1000).padStart(3, '0')}${fine ? '000400' : '000000'}`;
  execFileSync('touch', ['-d', `@${Math.floor(ms / 1000)}.${ns}`, dir]);
}

/** Moves the directory's times a minute back, as if nothing had changed in it for that long. */
async function settle(dir: string): Promise<void> {
  const past = new Date(Date.now() - 60_000);
  await utimes(dir, past, past);
}

describe('vfs registry: List on a local filesystem', () => {
  let root = '';
  let dir = '';
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'stowage-registry-'));
    dir = join(root, 'volumes');
    await mkdir(dir);
  });
  afterEach(async () => { await rm(root, { recursive: true, force: true }); });

  it('reuses the names of a directory whose times have not changed since a settled readdir, and still shows what another node adds or removes', async () => {
    const here = countingPort(root, dir);
    // Without the directory's watch (as where inotify is unavailable): the times alone decide.
    const registry = new VolumeRegistry(here.port, dir, silentLogger, undefined, undefined, false);
    const other = new VolumeRegistry(countingPort(root, dir).port, dir, silentLogger);
    expect(await other.add(entry('first', 'node-b'))).toBe(true);

    // Times not yet past their clock tick (here: ahead of the clock): read at every List, since
    // another change in the same tick would not show in the times.
    stamp(dir, 3_600_000, true);
    expect((await registry.list()).map((r) => r.name)).toEqual(['first']);
    expect((await registry.list()).map((r) => r.name)).toEqual(['first']);
    expect(here.readdirs()).toBe(2);

    await settle(dir);
    expect((await registry.list()).map((r) => r.name)).toEqual(['first']);
    const afterSettledRead = here.readdirs();
    expect((await registry.list()).map((r) => r.name)).toEqual(['first']);
    expect((await registry.list()).map((r) => r.name)).toEqual(['first']);
    expect(here.readdirs()).toBe(afterSettledRead);

    // Another node's create, the instant after: the directory's times moved, so it is read.
    expect(await other.add(entry('second', 'node-b'))).toBe(true);
    expect((await registry.list()).map((r) => r.name)).toEqual(['first', 'second']);
    expect(here.readdirs()).toBe(afterSettledRead + 1);

    await settle(dir);
    expect((await registry.list()).map((r) => r.name)).toEqual(['first', 'second']);
    await other.delete('first');
    expect((await registry.list()).map((r) => r.name)).toEqual(['second']);
    expect(await readdir(dir)).toContain('second.json');
  });

  it('trusts a time with nanosecond digits once it is a few kernel ticks old, a time in whole milliseconds only after a second', async () => {
    expect(settleTimeOf(1_780_000_000_123.456_7)).toBe(50);
    expect(settleTimeOf(1_780_000_000_123)).toBe(1_000);
    expect(settleTimeOf(1_780_000_000_000)).toBe(1_000);

    const here = countingPort(root, dir);
    const registry = new VolumeRegistry(here.port, dir, silentLogger, undefined, undefined, false);
    expect(await new VolumeRegistry(here.port, dir, silentLogger).add(entry('only', 'node-b'))).toBe(true);
    stamp(dir, -200, true);
    const before = here.readdirs();
    for (let i = 0; i < 3; i++) expect((await registry.list()).map((r) => r.name)).toEqual(['only']);
    expect(here.readdirs()).toBe(before + 1);

    // Whole milliseconds, as young: maybe a coarse filesystem's second, so read each time.
    stamp(dir, -200, false);
    for (let i = 0; i < 2; i++) expect((await registry.list()).map((r) => r.name)).toEqual(['only']);
    expect(here.readdirs()).toBe(before + 3);
  });

  it('within the clock tick, reuses the names only while the directory watch saw no change, and shows a change in the same tick', async () => {
    const here = countingPort(root, dir);
    // The directory's times as a filesystem whose clock has not ticked since: fixed, and young.
    const frozen = Date.now() + 3_600_000 + 0.0004;
    const realStat = here.port.stat.bind(here.port);
    vi.spyOn(here.port, 'stat').mockImplementation((async (path: string) => {
      const stats = await realStat(path);
      return path === dir ? Object.assign(Object.create(Object.getPrototypeOf(stats) as object) as object, stats, { mtimeMs: frozen, ctimeMs: frozen }) : stats;
    }) as FsPort['stat']);
    const registry = new VolumeRegistry(here.port, dir, silentLogger);
    expect(await new VolumeRegistry(countingPort(root, dir).port, dir, silentLogger).add(entry('first', 'node-b'))).toBe(true);
    try {
      expect((await registry.list()).map((r) => r.name)).toEqual(['first']);
      const afterFirst = here.readdirs();
      for (let i = 0; i < 3; i++) expect((await registry.list()).map((r) => r.name)).toEqual(['first']);
      expect(here.readdirs()).toBe(afterFirst);

      // Another process's create: the times cannot show it, the watch does.
      execFileSync(process.execPath, ['-e', 'require("node:fs").writeFileSync(process.argv[1], process.argv[2])',
        join(dir, 'second.json'), JSON.stringify(entry('second', 'node-c'))]);
      expect((await registry.list()).map((r) => r.name)).toEqual(['first', 'second']);
      expect(here.readdirs()).toBe(afterFirst + 1);
      expect((await registry.list()).map((r) => r.name)).toEqual(['first', 'second']);
      expect(here.readdirs()).toBe(afterFirst + 1);

      // And its removal of an entry.
      execFileSync('rm', [join(dir, 'first.json')]);
      expect((await registry.list()).map((r) => r.name)).toEqual(['second']);

      // The directory replaced under its path (inotify follows the inode): the new one is watched.
      await rename(dir, `${dir}-old`);
      await mkdir(dir);
      await writeFile(join(dir, 'third.json'), JSON.stringify(entry('third', 'node-c')));
      expect((await registry.list()).map((r) => r.name)).toEqual(['third']);
      expect((await registry.list()).map((r) => r.name)).toEqual(['third']);
      execFileSync(process.execPath, ['-e', 'require("node:fs").writeFileSync(process.argv[1], process.argv[2])',
        join(dir, 'fourth.json'), JSON.stringify(entry('fourth', 'node-c'))]);
      expect((await registry.list()).map((r) => r.name)).toEqual(['fourth', 'third']);

      // Without the watch (closed: as where inotify fails), every List reads the young directory.
      registry.close();
      const closedAt = here.readdirs();
      for (let i = 0; i < 2; i++) expect((await registry.list()).map((r) => r.name)).toEqual(['fourth', 'third']);
      expect(here.readdirs()).toBe(closedAt + 2);
    } finally {
      registry.close();
    }
  });

  it('answers a repeated Get without a stat while the watch saw no change, and sees another node replace or remove the entry', async () => {
    const local = new LocalFirstFs();
    local.trustIfLocal(root);
    const port = asFsPort(local);
    const file = join(dir, 'db.json');
    const lstats = vi.spyOn(port, 'lstat');
    const statsOfEntry = () => lstats.mock.calls.filter(([path]) => path === file).length;
    const registry = new VolumeRegistry(port, dir, silentLogger);
    const other = new VolumeRegistry(asFsPort(new LocalFirstFs()), dir, silentLogger);
    expect(await other.add(entry('db', 'node-b'))).toBe(true);
    await registry.list(); // starts the directory's watch, as Docker's first List does
    expect((await registry.get('db'))?.record.createdBy).toBe('node-b');
    const checked = statsOfEntry();
    for (let i = 0; i < 5; i++) expect((await registry.get('db'))?.record.createdBy).toBe('node-b');
    expect(statsOfEntry()).toBe(checked);

    // Another node removes it and makes a new volume of the name: the next Get has the new record.
    await other.delete('db');
    expect(await other.add(entry('db', 'node-c'))).toBe(true);
    expect((await registry.get('db'))?.record.createdBy).toBe('node-c');
    expect(statsOfEntry()).toBe(checked + 1);
    // Replaced in place (same size, a new inode by rename), then removed: each shows at once.
    await writeFile(join(dir, '.tmp-replace'), JSON.stringify(entry('db', 'node-d'), null, 1));
    await rename(join(dir, '.tmp-replace'), file);
    expect((await registry.get('db'))?.record.createdBy).toBe('node-d');
    await rm(file);
    expect(await registry.get('db')).toBeUndefined();
  });

  it('reads the directory at every List when it is not on a registered local filesystem', async () => {
    const local = new LocalFirstFs();
    const port = asFsPort(local);
    const spy = vi.spyOn(port, 'readdir');
    const registry = new VolumeRegistry(port, dir, silentLogger);
    expect(await new VolumeRegistry(port, dir, silentLogger).add(entry('only', 'node-b'))).toBe(true);
    await settle(dir);
    for (let i = 0; i < 3; i++) expect((await registry.list()).map((r) => r.name)).toEqual(['only']);
    expect(spy.mock.calls.filter(([path]) => path === dir)).toHaveLength(3);
  });

  it('writes the epoch of a removal over the old one on a local filesystem, and as a new file elsewhere', async () => {
    const epochFile = join(dir, '.epoch');
    const bumpInode = async (registry: VolumeRegistry, name: string) => {
      expect(await registry.add(entry(name, 'node-a'))).toBe(true);
      const before = await stat(epochFile).catch(() => undefined);
      const beforeText = before && await readFile(epochFile, 'utf8');
      await registry.delete(name);
      const after = await stat(epochFile);
      expect(await readFile(epochFile, 'utf8')).toMatch(/^[0-9a-f]{16}$/);
      expect(await readFile(epochFile, 'utf8')).not.toBe(beforeText);
      return { before: before?.ino, after: after.ino };
    };
    const local = countingPort(root, dir).port;
    const trusted = new VolumeRegistry(local, dir, silentLogger, undefined, undefined, false);
    // The first removal makes the file; later ones on a local filesystem keep its inode.
    expect((await bumpInode(trusted, 'one')).before).toBeUndefined();
    const second = await bumpInode(trusted, 'two');
    expect(second.after).toBe(second.before);
    // Not on a registered local filesystem (a network one): a new file every time.
    const elsewhere = new VolumeRegistry(asFsPort(new LocalFirstFs()), dir, silentLogger);
    const third = await bumpInode(elsewhere, 'three');
    expect(third.after).not.toBe(third.before);
  });
});
