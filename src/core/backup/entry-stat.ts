import type { BigIntStats } from 'node:fs';
import type { Entry } from './format.js';

/** What a backup's manifest records of an entry's stat. */

export function metadata(stat: BigIntStats): Pick<Entry, 'mode' | 'uid' | 'gid' | 'mtimeNs' | 'atimeNs'> {
  return {
    mode: Number(stat.mode & 0o7777n),
    uid: Number(stat.uid),
    gid: Number(stat.gid),
    mtimeNs: stat.mtimeNs.toString(),
    atimeNs: stat.atimeNs.toString(),
  };
}

/**
 * metadata with the inode and change time: what the files cache and the carrying over of
 * extended attributes compare with the parent backup's entry.
 */
export function ownFacts(stat: BigIntStats): Pick<Entry, 'mode' | 'uid' | 'gid' | 'mtimeNs' | 'atimeNs' | 'ino' | 'ctimeNs'> {
  return { ...metadata(stat), ino: inodeNumber(stat.ino), ctimeNs: stat.ctimeNs.toString() };
}

/** The major and minor numbers in a Linux dev_t (glibc's gnu_dev_major and gnu_dev_minor). */
export function deviceNumbers(rdev: bigint): { major: number; minor: number } {
  return {
    major: Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn)),
    minor: Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn)),
  };
}

/**
 * An inode number as the manifest stores it: a number where it is exact, else its decimal string.
 * GlusterFS gives 64-bit inode numbers derived from its file ids, beyond 2^53 and often beyond
 * 2^63, which node's bigint stats (signed 64-bit) show as negative.
 */
export function inodeNumber(ino: bigint): number | string {
  const unsigned = BigInt.asUintN(64, ino);
  return unsigned <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(unsigned) : unsigned.toString();
}

/**
 * Fewer bytes allocated than the file's size: it has holes (st_blocks counts 512-byte units on
 * Linux whatever the filesystem's block size). A filesystem that compresses, or keeps a tiny
 * file inside its inode, can say so of a file without holes; the restore then leaves holes only
 * where a chunk is all zeros, which such a filesystem stores as little anyway.
 */
export function hasHoles(stat: BigIntStats): boolean {
  return stat.blocks * 512n < stat.size;
}

/** A file's entry without its content, as the walk found it. */
export function fileBase(path: string, stat: BigIntStats) {
  return { path, type: 'file' as const, ...ownFacts(stat), ...(hasHoles(stat) ? { sparse: true as const } : {}) };
}

