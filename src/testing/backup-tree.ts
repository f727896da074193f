import { createHash, randomBytes } from 'node:crypto';
import { chmod, chown, link, lstat, mkdir, open, readdir, readFile, readlink, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ExecaCommandRunner } from '../core/command-runner.js';
import { fsPath, nameFromBytes } from '../core/backup/raw-names.js';
import { getfattrArgs, parseXattrDump, type Xattr } from '../core/backup/xattrs.js';

/** The tree the backup suite writes into a volume, and what it reads back to compare. */

/** Everything a restore must bring back about one entry, keyed by its path in the volume. */
export interface EntryFacts {
  type: 'file' | 'dir' | 'symlink' | 'fifo' | 'chardev' | 'blockdev';
  mode: number;
  uid: number;
  gid: number;
  mtimeMs: number;
  size?: number;
  sha256?: string;
  target?: string;
  /** A device's numbers (st_rdev). */
  rdev?: number;
  /** Extended attributes, as getfattr reads them. */
  xattrs?: Xattr[];
  /** For a file with several names: the first of its names in path order. */
  linkOf?: string;
}

/**
 * The extended attributes of every entry under `dir` that has some, by path as a manifest
 * spells it ('.' for `dir`): one `getfattr -R` over the tree, as a person checking would.
 */
export async function readTreeXattrs(dir: string): Promise<Map<string, Xattr[]>> {
  const result = await new ExecaCommandRunner().run('getfattr', ['-R', '-P', ...getfattrArgs(), dir],
    { env: { LC_ALL: 'C' }, bytesOut: true, timeoutMs: 10 * 60 * 1000 });
  const root = Buffer.from(dir);
  const byPath = new Map<string, Xattr[]>();
  for (const { path, xattrs } of parseXattrDump(result.stdout).files) {
    if (xattrs.length === 0) continue;
    if (path.equals(root)) byPath.set('.', xattrs);
    else if (path.subarray(0, root.length + 1).equals(Buffer.concat([root, Buffer.of(0x2f)]))) byPath.set(nameFromBytes(path.subarray(root.length + 1)), xattrs);
  }
  return byPath;
}

/** Every entry under `dir` except `dir` itself (a new volume's root belongs to the backend). */
export async function describeTree(dir: string): Promise<Map<string, EntryFacts>> {
  const facts = new Map<string, EntryFacts>();
  const firstName = new Map<bigint, string>();
  const walk = async (rel: string): Promise<void> => {
    // Names as bytes, keyed as a manifest spells them: a name that is not UTF-8 is one too.
    const names = (await readdir(fsPath(join(dir, rel)), { encoding: 'buffer' })).map(nameFromBytes).sort();
    for (const name of names) {
      const path = rel === '' ? name : `${rel}/${name}`;
      const full = fsPath(join(dir, path));
      const stat = await lstat(full, { bigint: true });
      // Times to the millisecond, what every backend's file system here keeps, cut from the
      // nanoseconds: stat's float mtimeMs rounds up to the next millisecond within 0.2 µs of it,
      // where a restore (exact to the microsecond) lands just below.
      const common = { mode: Number(stat.mode) & 0o7777, uid: Number(stat.uid), gid: Number(stat.gid), mtimeMs: Number(stat.mtimeNs / 1_000_000n) };
      if (stat.isSymbolicLink()) {
        facts.set(path, { type: 'symlink', ...common, target: nameFromBytes(await readlink(full, 'buffer')) });
      } else if (stat.isDirectory()) {
        facts.set(path, { type: 'dir', ...common });
        await walk(path);
      } else if (stat.isFile()) {
        const sha256 = createHash('sha256').update(await readFile(full)).digest('hex');
        const entry: EntryFacts = { type: 'file', ...common, size: Number(stat.size), sha256 };
        if (stat.nlink > 1n) {
          const first = firstName.get(stat.ino);
          if (first === undefined) firstName.set(stat.ino, path);
          else entry.linkOf = first;
        }
        facts.set(path, entry);
      } else if (stat.isFIFO()) {
        facts.set(path, { type: 'fifo', ...common });
      } else if (stat.isCharacterDevice() || stat.isBlockDevice()) {
        facts.set(path, { type: stat.isCharacterDevice() ? 'chardev' : 'blockdev', ...common, rdev: Number(stat.rdev) });
      } else {
        throw new Error(`unexpected entry ${join(dir, path)} in the suite's tree`);
      }
    }
  };
  await walk('');
  for (const [path, xattrs] of await readTreeXattrs(dir)) {
    const entry = facts.get(path);
    if (entry) entry.xattrs = xattrs;
  }
  // Directory times last: reading does not change them, but a walk interleaved with writes would.
  return facts;
}

export const MiB = 2 ** 20;
const OLD = new Date('2021-03-04T05:06:07.000Z');
const BEFORE_1970 = new Date('1969-07-20T20:17:40.250Z');
/** To the nanosecond, for touch: Node's utimes keeps microseconds only. */
const NEAR_A_MILLISECOND = '@1796510721.275999900';

/** The tree the suite backs up: a large file, small ones, symlinks, a hardlink, a FIFO, a device, modes, owners, times. */
export async function writeTree(path: string): Promise<void> {
  const big = await open(join(path, 'big.bin'), 'w');
  try {
    for (let i = 0; i < 6; i += 1) await big.write(randomBytes(MiB));
  } finally {
    await big.close();
  }
  await mkdir(join(path, 'small', 'deep'), { recursive: true });
  for (let i = 0; i < 40; i += 1) await writeFile(join(path, 'small', `f${i}.txt`), `small file ${i}\n`.repeat(i + 1));
  await writeFile(join(path, 'small', 'deep', 'empty'), '');
  await writeFile(join(path, 'small', 'deep', 'run.sh'), '#!/bin/sh\necho hi\n');
  await chmod(join(path, 'small', 'deep', 'run.sh'), 0o755);
  await writeFile(join(path, 'secret'), 'only the owner\n');
  await chmod(join(path, 'secret'), 0o600);
  // Owners other than one's own need root; an unprivileged run checks its own ids.
  if (process.getuid?.() === 0) await chown(join(path, 'secret'), 1234, 5678);
  await symlink('small/f1.txt', join(path, 'link-to-f1'));
  await symlink('/nowhere/at/all', join(path, 'dangling'));
  await link(join(path, 'small', 'f2.txt'), join(path, 'hard-f2'));
  await mkdir(join(path, 'private'), { mode: 0o700 });
  await writeFile(join(path, 'private', 'old.txt'), 'written long ago\n');
  await utimes(join(path, 'private', 'old.txt'), OLD, OLD);
  await utimes(join(path, 'private'), OLD, OLD);
  await utimes(join(path, 'small', 'deep'), OLD, OLD);
  // A name that is not UTF-8 (latin1, as old shares have them), a link to it, and a time
  // before 1970: all three once made a backup that lost the file or never restored.
  const latin1 = Buffer.concat([Buffer.from(`${join(path, 'small')}/caf`), Buffer.of(0xe9), Buffer.from('.txt')]);
  await writeFile(latin1, 'a latin1 name\n');
  await symlink(Buffer.concat([Buffer.from('small/caf'), Buffer.of(0xe9), Buffer.from('.txt')]), join(path, 'link-to-latin1'));
  await utimes(latin1, BEFORE_1970, BEFORE_1970);
  const commands = new ExecaCommandRunner();
  // A tenth of a microsecond below a millisecond: stat's float mtimeMs reads the next one, and a
  // restore, exact to the microsecond, lands just below (see describeTree).
  await commands.run('touch', ['-m', '-d', NEAR_A_MILLISECOND, '--', join(path, 'small', 'f5.txt')]);
  // A FIFO and, as root, a device: a Docker-in-Docker volume's overlayfs whiteouts are 0:0 devices.
  await commands.run('mkfifo', ['-m', '640', '--', join(path, 'small', 'pipe')]);
  // Extended attributes: a user's, and as root overlayfs's mark of an opaque directory.
  await commands.run('setfattr', ['-n', 'user.origin', '-v', 'conformance', '--', join(path, 'small', 'f3.txt')]);
  if (process.getuid?.() === 0) {
    await commands.run('mknod', ['-m', '600', '--', join(path, 'whiteout'), 'c', '0', '0']);
    await chown(join(path, 'whiteout'), 1234, 5678);
    await commands.run('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', '--', join(path, 'private')]);
  }
  // Holes before and after its data, as a disk image or a database file has them.
  const sparse = await open(join(path, SPARSE.name), 'w');
  try {
    await sparse.write(randomBytes(SPARSE.dataBytes), 0, SPARSE.dataBytes, SPARSE.dataAt);
    await sparse.truncate(SPARSE.size);
  } finally {
    await sparse.close();
  }
}

/** The suite's sparse file: mostly holes. */
export const SPARSE = { name: 'sparse.img', size: 24 * MiB, dataAt: 8 * MiB + 4096, dataBytes: 64 * 1024 };

/** Bytes the file system allocated for `path` (st_blocks is in 512-byte units). */
export async function allocatedBytes(path: string): Promise<number> {
  return (await lstat(path)).blocks * 512;
}

export async function copyTree(from: string, to: string): Promise<void> {
  await mkdir(to, { recursive: true });
  for (const name of await readdir(from)) {
    const stat = await lstat(join(from, name));
    if (stat.isDirectory()) await copyTree(join(from, name), join(to, name));
    else if (stat.isFile()) await writeFile(join(to, name), await readFile(join(from, name)));
  }
}

export async function largestFile(dir: string): Promise<string> {
  let best: { path: string; size: number } | undefined;
  const walk = async (d: string): Promise<void> => {
    for (const name of await readdir(d)) {
      const path = join(d, name);
      const stat = await lstat(path);
      if (stat.isDirectory()) await walk(path);
      else if (stat.isFile() && (!best || stat.size > best.size)) best = { path, size: stat.size };
    }
  };
  await walk(dir);
  if (!best) throw new Error(`no file under ${dir}`);
  return best.path;
}
