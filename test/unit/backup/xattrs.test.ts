/**
 * Extended attributes through a backup and a restore, on a real tree with the real getfattr and
 * setfattr: a Docker-in-Docker volume's overlayfs marks, a file capability (which chown clears,
 * so the order of a restore matters), binary values, symlinks' own attributes, names that are
 * not UTF-8 or hold a newline.
 */
import { randomBytes } from 'node:crypto';
import { readdirSync, readlinkSync } from 'node:fs';
import { chown, mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { comparePaths, EntrySchema } from '../../../src/core/backup/format.js';
import { copyBackup } from '../../../src/core/backup/copy-backup.js';
import { backupTree, Repository, restoreTree } from '../../../src/core/backup/index.js';
import { CommandError, ExecaCommandRunner, type CommandRunner } from '../../../src/core/command-runner.js';
import { XATTR_BATCH_ENTRIES, XattrReader } from '../../../src/core/backup/xattr-reader.js';
import { readTreeXattrs } from '../../../src/testing/backup-tree.js';
import { findExecutable, systemSuite } from '../../helpers/requirements.js';
import { collect } from './tree-helpers.js';

const isRoot = process.getuid?.() === 0;
const noAttr = systemSuite('extended attributes', isRoot && findExecutable('getfattr') && findExecutable('setfattr')
  ? { ok: true } : { ok: false, why: 'needs root and the attr package (getfattr, setfattr)' });
const CHUNKER = { minSize: 16 * 1024, avgSize: 64 * 1024, maxSize: 256 * 1024, seed: 'test' };
const commands = new ExecaCommandRunner();

/** A file capability (VFS_CAP_REVISION_2, effective, cap_net_raw permitted). */
const CAP_NET_RAW = '0x0100000200200000000000000000000000000000';

/** One attribute's value as hex, read with getfattr; undefined when the entry has none by that name. */
async function valueOf(path: string, name: string): Promise<string | undefined> {
  const result = await execa('getfattr', ['-h', '--absolute-names', '-n', name, '--only-values', '--', path], { encoding: 'buffer', reject: false });
  return result.exitCode === 0 ? Buffer.from(result.stdout).toString('hex') : undefined;
}

/** valueOf for `<dir>/caf\xe9`, a name an argv from here cannot hold: the shell's printf makes it. */
async function latin1ValueOf(dir: string, name: string): Promise<string | undefined> {
  const result = await execa('sh', ['-c', 'getfattr -h --absolute-names -n "$2" --only-values -- "$(printf "%s/caf\\351" "$1")"', 'sh', dir, name],
    { encoding: 'buffer', reject: false });
  return result.exitCode === 0 ? Buffer.from(result.stdout).toString('hex') : undefined;
}

describe.skipIf(noAttr)('extended attributes in a backup', () => {
  let base = '';
  let repo: Repository;
  const binary = randomBytes(300);

  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-xattrs-'));
    repo = await Repository.init(new VfsBlobStore(join(base, 'repo'), { durable: false }), { chunker: CHUNKER });
    const src = join(base, 'src');
    await mkdir(join(src, 'layer/opaque'), { recursive: true });
    await writeFile(join(src, 'layer/opaque/kept'), 'kept\n');
    await execa('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', join(src, 'layer/opaque')]);
    await writeFile(join(src, 'ping'), 'a binary\n');
    await chown(join(src, 'ping'), 1000, 1000);
    await execa('setfattr', ['-n', 'security.capability', '-v', CAP_NET_RAW, join(src, 'ping')]);
    await execa('setfattr', ['-n', 'user.blob', '-v', `0x${binary.toString('hex')}`, join(src, 'ping')]);
    await execa('setfattr', ['-n', 'user.empty', join(src, 'ping')]);
    // Outside the namespaces kept, as security.selinux is: not read, not in the manifest.
    await execa('setfattr', ['-n', 'security.other', '-v', 'label', join(src, 'ping')]);
    await symlink('ping', join(src, 'link'));
    await execa('setfattr', ['-h', '-n', 'trusted.own', '-v', 'link', join(src, 'link')]);
    await writeFile(Buffer.concat([Buffer.from(`${src}/caf`), Buffer.of(0xe9)]), 'latin1\n');
    // An argv from here cannot hold a byte that is not UTF-8: the shell's printf makes the name.
    await execa('sh', ['-c', 'setfattr -n user.name -v latin1 "$(printf "%s/caf\\351" "$1")"', 'sh', src]);
    await writeFile(join(src, 'new\nline'), 'newline\n');
    await execa('setfattr', ['-n', 'user.nl', '-v', 'yes', join(src, 'new\nline')]);
  });
  afterAll(async () => {
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('come back on every entry, after the owner (chown clears a capability), symlinks\' own included', async () => {
    const src = join(base, 'src');
    const record = await backupTree(src, repo, { volume: 'x' });
    expect(record.warnings).toEqual([]);
    expect(record.xattrsRead).toBe(true);
    const { entries } = await collect(repo, record);
    expect(entries.find((e) => e.path === 'layer/opaque')?.xattrs).toEqual([['trusted.overlay.opaque', Buffer.from('y').toString('base64')]]);
    expect(new Map(entries.find((e) => e.path === 'ping')?.xattrs)).toEqual(new Map([
      ['security.capability', Buffer.from(CAP_NET_RAW.slice(2), 'hex').toString('base64')],
      ['user.blob', binary.toString('base64')],
      ['user.empty', ''],
    ]));

    const out = join(base, 'out');
    await mkdir(out);
    const warnings: string[] = [];
    await restoreTree(repo, 'x', record.id, out, { onWarning: (w) => warnings.push(w) });
    expect(warnings).toEqual([]);
    expect(await valueOf(join(out, 'layer/opaque'), 'trusted.overlay.opaque')).toBe(Buffer.from('y').toString('hex'));
    expect(await valueOf(join(out, 'ping'), 'security.capability')).toBe(CAP_NET_RAW.slice(2));
    expect(await valueOf(join(out, 'ping'), 'user.blob')).toBe(binary.toString('hex'));
    expect(await valueOf(join(out, 'ping'), 'user.empty')).toBe('');
    expect(await valueOf(join(out, 'link'), 'trusted.own')).toBe(Buffer.from('link').toString('hex'));
    // The symlink's attribute is its own: its target has none by that name.
    expect(await valueOf(join(out, 'ping'), 'trusted.own')).toBeUndefined();
    expect(await valueOf(join(out, 'new\nline'), 'user.nl')).toBe(Buffer.from('yes').toString('hex'));
    expect(await latin1ValueOf(out, 'user.name')).toBe(Buffer.from('latin1').toString('hex'));
    // Everything getfattr reads in the restored tree is what it read in the source.
    expect(await readTreeXattrs(out)).toEqual(await readTreeXattrs(src));
  });

  it('without getfattr a backup goes on without attributes and says why; xattrs: false reads none', async () => {
    // The real xargs, asked to run a getfattr that is not there: it exits 127, as on a host without attr.
    const noGetfattr: CommandRunner = { run: (program, args, options) => commands.run(program, args.map((a) => (a === 'getfattr' ? 'getfattr-not-installed' : a)), options) };
    const without = await backupTree(join(base, 'src'), repo, { volume: 'y', commands: noGetfattr, parent: false });
    expect(without.warnings).toEqual(['extended attributes were not backed up: getfattr is not installed (Debian: apt-get install attr)']);
    expect(without.xattrsRead).toBeUndefined();
    expect((await collect(repo, without)).entries.some((e) => e.xattrs)).toBe(false);
    const noXargs: CommandRunner = {
      run: async (program, args) => { throw new CommandError({ program, args, reason: 'spawn', stdout: '', stderr: '' }, `cannot run ${program}: ENOENT`); },
    };
    const withoutXargs = await backupTree(join(base, 'src'), repo, { volume: 'y', commands: noXargs, parent: false });
    expect(withoutXargs.warnings).toEqual(['extended attributes were not backed up: xargs is not installed (Debian: apt-get install findutils)']);
    const off = await backupTree(join(base, 'src'), repo, { volume: 'y', xattrs: false, parent: false });
    expect(off.warnings).toEqual([]);
    expect((await collect(repo, off)).entries.some((e) => e.xattrs)).toBe(false);
  });

  it('a manifest another machine wrote cannot name attributes outside the namespaces, or oversized ones', () => {
    const file = { path: 'f', type: 'file', mode: 0o644, uid: 0, gid: 0, mtimeNs: '0', atimeNs: '0', size: 0, chunks: [] };
    expect(EntrySchema.safeParse({ ...file, xattrs: [['user.a', 'eQ==']] }).success).toBe(true);
    for (const xattrs of [
      [['user.a\n# file: /etc/passwd', 'eQ==']],
      [['other.a', 'eQ==']],
      [['user.', 'eQ==']],
      [['user.a', 'not base64!']],
      [['user.a', 'eQ=='], ['user.a', 'eQ==']],
      [['user.a', Buffer.alloc(70_000).toString('base64')]],
      [],
    ]) expect(EntrySchema.safeParse({ ...file, xattrs }).success, JSON.stringify(xattrs).slice(0, 80)).toBe(false);
    expect(EntrySchema.safeParse({ path: 'h', type: 'hardlink', target: 'f', mode: 0o644, uid: 0, gid: 0, mtimeNs: '0', atimeNs: '0', size: 0, xattrs: [['user.a', 'eQ==']] }).success).toBe(false);
  });
});

/** A runner that runs the real programs and keeps each getfattr batch's paths (xargs's input, NUL-separated). */
function recording(before?: () => Promise<void>): CommandRunner & { batches: string[][] } {
  const batches: string[][] = [];
  return {
    batches,
    run: async (program, args, options) => {
      if (program === 'xargs') {
        batches.push(Buffer.from(options?.input ?? '').toString('latin1').split('\0').filter((p) => p !== ''));
        await before?.();
      }
      return commands.run(program, args, options);
    },
  };
}

describe.skipIf(noAttr)('extended attributes read a batch at a time, through the walk\'s directories', () => {
  let base = '';
  let repo: Repository;
  const byPath = async (record: Awaited<ReturnType<typeof backupTree>>) =>
    new Map((await collect(repo, record)).entries.map((e) => [e.path, new Map(e.xattrs ?? [])]));
  const b64 = (text: string) => Buffer.from(text).toString('base64');

  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-xattr-batches-'));
    repo = await Repository.init(new VfsBlobStore(join(base, 'repo'), { durable: false }), { chunker: CHUNKER });
  });
  afterAll(async () => {
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('an unchanged entry keeps its parent backup\'s attributes unread; a changed one is read again', async () => {
    const src = join(base, 'carry');
    await mkdir(join(src, 'd'), { recursive: true });
    for (const name of ['a', 'b', 'c']) {
      await writeFile(join(src, 'd', name), name);
      await execa('setfattr', ['-n', 'user.v', '-v', `${name}1`, join(src, 'd', name)]);
    }
    const first = await backupTree(src, repo, { volume: 'carry', commands: recording() });
    expect(first.xattrsRead).toBe(true);
    // Setting an attribute changes b's ctime, and nothing else's.
    await execa('setfattr', ['-n', 'user.v', '-v', 'b2', join(src, 'd', 'b')]);
    const runner = recording();
    const second = await backupTree(src, repo, { volume: 'carry', commands: runner });
    expect(second.parent).toBe(first.id);
    expect(runner.batches.flat().map((p) => p.replace(/^\/proc\/\d+\/fd\/\d+\//, ''))).toEqual(['b']);
    const entries = await byPath(second);
    expect(entries.get('d/a')).toEqual(new Map([['user.v', b64('a1')]]));
    expect(entries.get('d/b')).toEqual(new Map([['user.v', b64('b2')]]));
    expect(entries.get('d/c')).toEqual(new Map([['user.v', b64('c1')]]));
    expect(second.xattrsRead).toBe(true);
    // A copy holds the same manifest: a backup to the copy's repository carries from it too.
    const elsewhere = await Repository.init(new VfsBlobStore(join(base, 'carry-copy'), { durable: false }), { chunker: CHUNKER });
    const copied = await copyBackup(repo, 'carry', second.id, elsewhere);
    expect(copied.record.xattrsRead).toBe(true);
    const there = recording();
    await backupTree(src, elsewhere, { volume: 'carry', commands: there });
    expect(there.batches.flat()).toEqual([]);

    // A parent that did not read them (xattrs: false) gives nothing to carry: all are read.
    const off = await backupTree(src, repo, { volume: 'carry', xattrs: false });
    expect(off.xattrsRead).toBeUndefined();
    const after = recording();
    const third = await backupTree(src, repo, { volume: 'carry', commands: after, parent: off.id });
    expect(after.batches.flat()).toHaveLength(5);
    expect((await byPath(third)).get('d/c')).toEqual(new Map([['user.v', b64('c1')]]));
  });

  it('an entry whose attributes were partly left out is read again, and said again, by every later backup; the rest carry over', async () => {
    const src = join(base, 'partial');
    await mkdir(src);
    for (const name of ['odd', 'many', 'plain']) await writeFile(join(src, name), name);
    // A name outside what stowage backs up (a space), beside one it keeps.
    await execa('setfattr', ['-n', 'user.kept', '-v', 'k', join(src, 'odd')]);
    await execa('setfattr', ['-n', 'user.a b', '-v', 'x', join(src, 'odd')]);
    // More attributes than a manifest entry holds (64).
    for (let i = 0; i < 65; i++) await execa('setfattr', ['-n', `user.n${i}`, '-v', 'v', join(src, 'many')]);
    await execa('setfattr', ['-n', 'user.v', '-v', 'p', join(src, 'plain')]);
    const backUp = async () => {
      const warnings: string[] = [];
      const runner = recording();
      const record = await backupTree(src, repo, { volume: 'partial', commands: runner, onWarning: (w) => warnings.push(w) });
      const entries = new Map((await collect(repo, record)).entries.map((e) => [e.path, e]));
      return { record, warnings, entries, read: runner.batches.flat().map((p) => p.split('/').pop()).sort() };
    };
    const first = await backUp();
    expect(first.record.xattrsRead).toBe(true);
    // The root is named by its own path, ending in the tree's name.
    expect(first.read).toEqual(['many', 'odd', 'partial', 'plain']);
    expect(first.entries.get('odd')).toMatchObject({ xattrs: [['user.kept', b64('k')]], xattrsPartial: true });
    expect(first.entries.get('many')?.xattrs).toBeUndefined();
    expect(first.entries.get('many')?.xattrsPartial).toBe(true);
    expect(first.entries.get('plain')).toMatchObject({ xattrs: [['user.v', b64('p')]] });
    expect(first.entries.get('plain')?.xattrsPartial).toBeUndefined();
    // Dropped as soon as they are read: a batch never holds more than an entry can keep.
    const reader = new XattrReader(commands, () => undefined);
    const ticket = reader.read('many', join(src, 'many'), undefined);
    expect(await ticket.get()).toBeUndefined();
    expect(ticket.partial).toBe(true);
    await reader.finish();
    const second = await backUp();
    for (const backup of [first, second]) {
      expect(backup.warnings).toEqual(expect.arrayContaining([
        'extended attributes: 1 with a name stowage does not back up were left out',
        expect.stringMatching(/^many: its extended attributes are left out \(more than 64 of them/),
      ]));
    }
    expect(second.record.parent).toBe(first.record.id);
    expect(second.read).toEqual(['many', 'odd']);
    expect(second.entries.get('odd')).toMatchObject({ xattrs: [['user.kept', b64('k')]], xattrsPartial: true });
    expect(second.entries.get('plain')).toMatchObject({ xattrs: [['user.v', b64('p')]] });
    expect(second.record.xattrsRead).toBe(true);
  });

  it('more warnings than a record holds still make a backup: the record keeps the first hundred', async () => {
    const src = join(base, 'noisy');
    await mkdir(src);
    // Sockets are skipped with a warning each; then the attribute reader has one more to say.
    await execa('python3', ['-c', 'import socket,sys\nfor i in range(100): socket.socket(socket.AF_UNIX).bind(f"{sys.argv[1]}/s{i:03}")', src]);
    await writeFile(join(src, 'z'), 'z');
    await execa('setfattr', ['-n', 'user.a b', '-v', 'x', join(src, 'z')]);
    const said: string[] = [];
    const record = await backupTree(src, repo, { volume: 'noisy', onWarning: (w) => said.push(w) });
    expect(record.warnings).toHaveLength(100);
    expect(said).toHaveLength(101);
    expect(said.at(-1)).toBe('extended attributes: 1 with a name stowage does not back up were left out');
    expect((await collect(repo, record)).entries.map((e) => e.path)).toEqual(['.', 'z']);
  });

  it('a directory swapped for a symlink before getfattr runs cannot lead it out of the volume', async () => {
    const src = join(base, 'swap');
    const outside = join(base, 'outside');
    await mkdir(join(src, 'sub'), { recursive: true });
    await mkdir(outside);
    await writeFile(join(src, 'sub', 'f'), 'mine');
    await execa('setfattr', ['-n', 'user.owner', '-v', 'volume', join(src, 'sub', 'f')]);
    await writeFile(join(outside, 'f'), 'host');
    await execa('setfattr', ['-n', 'user.owner', '-v', 'host-secret', join(outside, 'f')]);
    // Once the walk has listed everything, as a container could between two system calls.
    const runner = recording(async () => {
      await rename(join(src, 'sub'), join(base, 'sub-moved'));
      await symlink(outside, join(src, 'sub'));
    });
    const record = await backupTree(src, repo, { volume: 'swap', commands: runner, parent: false });
    expect((await byPath(record)).get('sub/f')).toEqual(new Map([['user.owner', b64('volume')]]));
  });

  it('a large tree is read in bounded batches, with a bounded number of directories open, every entry\'s attributes kept', async () => {
    const src = join(base, 'many');
    // One file per directory: each queued entry holds its own directory open until its batch has run.
    const names = Array.from({ length: 2500 }, (_, i) => `d${String(i).padStart(4, '0')}/f`);
    for (const name of names) {
      await mkdir(join(src, dirname(name)), { recursive: true });
      await writeFile(join(src, name), name);
    }
    // One setfattr for all: its --restore form takes a dump.
    const dump = names.map((name) => `# file: ${join(src, name)}\nuser.n=${JSON.stringify(name)}\n`).join('\n');
    await execa('setfattr', ['--restore=-'], { input: dump });
    const openAtStart = readdirSync('/proc/self/fd').length;
    const open: number[] = [];
    const runner = recording(async () => { open.push(readdirSync('/proc/self/fd').length - openAtStart); });
    const record = await backupTree(src, repo, { volume: 'many', commands: runner, parent: false });
    expect(runner.batches.length).toBeGreaterThanOrEqual(2);
    expect(Math.max(...runner.batches.map((b) => b.length))).toBeLessThanOrEqual(XATTR_BATCH_ENTRIES);
    expect(runner.batches.flat()).toHaveLength(5001);
    // 1024 directories at most, and a few descriptors of the repository and the reads.
    expect(Math.max(...open)).toBeLessThan(1100);
    expect(Math.max(...open)).toBeGreaterThan(500);
    const entries = await byPath(record);
    for (const name of names) expect(entries.get(name)?.get('user.n'), name).toBe(b64(name));
  });

  it('a batch whose attributes pass the output limit is read again in halves; an entry that alone does is left out, said', async () => {
    const src = join(base, 'heavy');
    await mkdir(src);
    const value = (n: number) => `0x${Buffer.alloc(n, 0x41).toString('hex')}`;
    // 1 KiB each: 8 of them pass a 4 KiB limit together, not one by one.
    for (let i = 0; i < 8; i++) {
      await writeFile(join(src, `f${i}`), '');
      await execa('setfattr', ['-n', 'user.v', '-v', value(1024), join(src, `f${i}`)]);
    }
    await writeFile(join(src, 'huge'), '');
    await execa('setfattr', ['-n', 'user.v', '-v', value(3500), join(src, 'huge')]);
    const warnings: string[] = [];
    const runner = recording();
    const reader = new XattrReader(runner, (w) => warnings.push(w), readlinkSync('/proc/self'), 4096);
    const names = [...Array.from({ length: 8 }, (_, i) => `f${i}`), 'huge'];
    const tickets = names.map((name) => reader.read(name, join(src, name), undefined));
    const values = await Promise.all(tickets.map((t) => t.get()));
    await reader.finish();
    for (let i = 0; i < 8; i++) expect(values[i], names[i]).toEqual([['user.v', Buffer.alloc(1024, 0x41).toString('base64')]]);
    expect(values[8]).toBeUndefined();
    expect(warnings).toEqual(['huge: its extended attributes are left out (more than 4096 bytes of them)']);
    // The whole batch first, then halves until each fits.
    expect(runner.batches[0]).toHaveLength(9);
    expect(runner.batches.length).toBeGreaterThan(3);
    expect(reader.complete).toBe(true);
  });

  it.skipIf(!findExecutable('unshare'))('in a pid namespace of its own under the host\'s /proc, entries are read through this process\'s descriptors', async () => {
    const src = join(base, 'namespaced');
    await mkdir(join(src, 'd'), { recursive: true });
    await writeFile(join(src, 'd', 'f'), 'x');
    await execa('setfattr', ['-n', 'user.where', '-v', 'here', join(src, 'd', 'f')]);
    // No --mount-proc: /proc numbers the child as the host does, not as process.pid says.
    const child = await execa('unshare', ['--pid', '--fork', process.execPath, '--import', 'tsx', join(import.meta.dirname, 'xattr-child.ts'), join(base, 'ns-repo'), src]);
    const out = JSON.parse(child.stdout) as { pid: number; procSelf: string; warnings: string[]; xattrs: Record<string, unknown> };
    expect(String(out.pid)).not.toBe(out.procSelf);
    expect(out.warnings).toEqual([]);
    expect(out.xattrs).toEqual({ 'd/f': [['user.where', b64('here')]] });
  });

  it('an incremental with changed entries among many carried ones keeps the walk\'s order, and restores', async () => {
    const src = join(base, 'mixed');
    // More entries than wait for their batch at most (4096), so carried entries pass a waiting one.
    const names = Array.from({ length: 5000 }, (_, i) => `d${String(Math.floor(i / 50)).padStart(3, '0')}/f${String(i % 50).padStart(2, '0')}`);
    for (const name of names) {
      await mkdir(join(src, dirname(name)), { recursive: true });
      await writeFile(join(src, name), name);
    }
    await execa('setfattr', ['-n', 'user.v', '-v', 'one', join(src, names[0]!)]);
    const first = await backupTree(src, repo, { volume: 'mixed' });
    // A changed entry near the start and one far on: each waits for a batch while the rest is carried.
    await execa('setfattr', ['-n', 'user.v', '-v', 'two', join(src, names[0]!)]);
    await execa('setfattr', ['-n', 'user.w', '-v', 'new', join(src, names[4500]!)]);
    const runner = recording();
    const second = await backupTree(src, repo, { volume: 'mixed', commands: runner });
    expect(second.parent).toBe(first.id);
    expect(runner.batches.flat()).toHaveLength(2);
    const paths = (await collect(repo, second)).entries.map((e) => e.path);
    expect(paths).toEqual([...paths].sort(comparePaths));
    const out = join(base, 'mixed-out');
    await mkdir(out);
    await restoreTree(repo, 'mixed', second.id, out);
    expect(await readTreeXattrs(out)).toEqual(await readTreeXattrs(src));
  });
});

