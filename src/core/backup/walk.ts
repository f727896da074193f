import { lstatSync, readdirSync, type BigIntStats } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCodes, StowageError } from '../errors.js';
import { comparePaths, type Entry } from './format.js';
import type { Turns } from './options.js';
import { fsPath, nameFromBytes } from './raw-names.js';

export interface Walked {
  /** Relative, with bytes that are not UTF-8 escaped (raw-names.ts). */
  path: string;
  /** For node:fs: bytes where the path has escaped names. */
  abs: string | Buffer;
  stat: BigIntStats;
  /** On the local filesystem the walk started on: synchronous calls are fine here. */
  local: boolean;
}

/**
 * Depth-first, names sorted: the order manifests are written and checked in (see comparePaths).
 * `local`: the root is on a local filesystem; entries on the root's device are then listed and
 * stat'ed synchronously, a mount of another device inside the tree through the thread pool.
 */
export async function* walk(root: string, local: boolean, turns: Turns): AsyncGenerator<Walked> {
  const rootStat = await lstat(root, { bigint: true });
  if (!rootStat.isDirectory()) throw new StowageError(ErrorCodes.INVALID_REQUEST, `${root} is not a directory`);
  yield { path: '.', abs: root, stat: rootStat, local };
  async function* below(rel: string, abs: string, dirLocal: boolean): AsyncGenerator<Walked> {
    // Names only, sorted: memory holds one directory's names per level, not the tree. As bytes:
    // a name that is not UTF-8 would come back as a string that names no file.
    const listed = dirLocal ? readdirSync(fsPath(abs), { encoding: 'buffer' }) : await readdir(fsPath(abs), { encoding: 'buffer' });
    const names = listed.map(nameFromBytes).sort();
    for (const name of names) {
      const childAbs = join(abs, name);
      const childRel = rel === '.' ? name : `${rel}/${name}`;
      const childFs = fsPath(childAbs);
      let stat: BigIntStats | undefined;
      if (dirLocal) {
        stat = lstatSync(childFs, { bigint: true, throwIfNoEntry: false });
        await turns.pause();
      } else {
        stat = await lstat(childFs, { bigint: true }).catch((err: unknown) => {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
          throw err;
        });
      }
      if (!stat) continue; // removed while we walked
      const childLocal = local && stat.dev === rootStat.dev;
      yield { path: childRel, abs: childFs, stat, local: childLocal };
      if (stat.isDirectory()) yield* below(childRel, childAbs, childLocal);
    }
  }
  yield* below('.', root, local);
}

/** Reads the parent's manifest in step with the walk: both are in comparePaths order. */
export class ParentCursor {
  private current: Entry | undefined;
  private done = false;

  constructor(private readonly iterator: AsyncIterator<Entry> | undefined) {
    if (!iterator) this.done = true;
  }

  async find(path: string): Promise<Entry | undefined> {
    while (!this.done) {
      if (!this.current) {
        const next = await this.iterator!.next();
        if (next.done) { this.done = true; return undefined; }
        this.current = next.value;
      }
      const order = comparePaths(this.current.path, path);
      if (order === 0) return this.current;
      if (order > 0) return undefined;
      this.current = undefined;
    }
    return undefined;
  }
}

export function metadata(stat: BigIntStats): Pick<Entry, 'mode' | 'uid' | 'gid' | 'mtimeNs' | 'atimeNs'> {
  return {
    mode: Number(stat.mode & 0o7777n),
    uid: Number(stat.uid),
    gid: Number(stat.gid),
    mtimeNs: stat.mtimeNs.toString(),
    atimeNs: stat.atimeNs.toString(),
  };
}
