import { join } from 'node:path';
import { z } from 'zod';
import { readFileNoFollow, sweepTemps, writeFileAtomic } from '../atomic-file.js';
import { ErrorCodes, StowageError, describeCause, errnoCode } from '../errors.js';
import type { FsPort } from '../fs-port.js';
import { isValidNodeId, isValidVolumeName } from '../names.js';
import { parseRecordText } from '../schema/parse-record.js';

/** The directory of restore claims inside the shared cluster directory (see RestoreClaims). */
export const RESTORE_CLAIMS_DIR = 'restoring';

const RestoreClaimSchema = z.object({
  format: z.literal(1),
  volume: z.string().refine(isValidVolumeName, 'not a valid volume name'),
  /** The node whose restore writes the volume. */
  node: z.string().refine(isValidNodeId, 'not a valid node id'),
  /** Which volume of that name the restore made (incarnationOf its record). */
  incarnation: z.string().max(256),
  startedAt: z.string().max(64),
});
export type RestoreClaim = z.infer<typeof RestoreClaimSchema>;

/**
 * Restores running or failed anywhere in the cluster, one file per volume under
 * `<cluster dir>/restoring/<volume>.json`. A restore's volume is visible on every node from its
 * create on, but holds partial data until the restore ends: the claim, written under the name's
 * cluster lock right before the create, is what tells another node's Mount to refuse it.
 * It goes when the restore succeeds or when its volume is removed. It names no backup URL (a URL
 * may carry credentials, and the directory is readable from every node).
 *
 * Claims are written durably: after a power loss of the restoring node, the half-restored volume
 * must still be refused elsewhere until that node's next start removes it.
 */
export class RestoreClaims {
  private readonly dir: string;

  constructor(private readonly fs: FsPort, clusterDir: string, private readonly nodeId: string) {
    this.dir = join(clusterDir, RESTORE_CLAIMS_DIR);
  }

  private file(volume: string): string {
    // Volume names are single safe path components (validated before any operation).
    return join(this.dir, `${volume}.json`);
  }

  /**
   * Whether the claims directory is a real directory (false when there is none). Anything else
   * there (a symlink, which would lead writes and unlinks out of the store) is E_STATE_CORRUPT.
   */
  private async realDir(volume: string): Promise<boolean> {
    const st = await this.fs.lstat(this.dir).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return undefined;
      throw this.failed('reading', this.dir, err, volume);
    });
    if (!st) return false;
    if (!st.isDirectory()) {
      throw new StowageError(ErrorCodes.STATE_CORRUPT, `${this.dir} is ${st.isSymbolicLink() ? 'a symbolic link' : 'not a directory'}, ` +
        'where restores claim their volumes; stowage does not follow or touch it: remove it, and every restore running then must be started again', { volume });
    }
    return true;
  }

  private failed(what: string, path: string, err: unknown, volume: string): StowageError {
    if (err instanceof StowageError) return err;
    return new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, `${what} the restore claim ${path} failed: ${describeCause(err)}`, { volume, cause: err });
  }

  async claim(volume: string, incarnation: string): Promise<void> {
    await this.fs.mkdir(this.dir, { recursive: true, mode: 0o700 }).catch((err: unknown) => {
      if (errnoCode(err) !== 'EEXIST') throw this.failed('writing', this.file(volume), err, volume);
    });
    if (!(await this.realDir(volume))) throw this.failed('writing', this.file(volume), new Error(`${this.dir} is not a directory`), volume);
    const claim: RestoreClaim = { format: 1, volume, node: this.nodeId, incarnation, startedAt: new Date().toISOString() };
    await writeFileAtomic(this.fs, this.file(volume), JSON.stringify(claim)).catch((err: unknown) => {
      throw this.failed('writing', this.file(volume), err, volume);
    });
  }

  /**
   * Removes the temporary files of claims this node was writing when it was killed (and any
   * node's older than an hour), so they do not pile up in the shared directory. Returns how many.
   */
  async sweepTemps(): Promise<number> {
    if (!(await this.realDir(''))) return 0;
    return (await sweepTemps(this.fs, this.dir, { nodeId: this.nodeId, maxAgeMs: 60 * 60 * 1000, nowMs: Date.now() })).length;
  }

  async release(volume: string): Promise<void> {
    // Every remove asks: the common answer (no claim) is one lstat, and nothing is changed.
    const there = await this.fs.lstat(this.file(volume)).then(() => true, (err: unknown) => {
      if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return false;
      throw this.failed('reading', this.file(volume), err, volume);
    });
    if (!there || !(await this.realDir(volume))) return;
    await this.fs.unlink(this.file(volume)).catch((err: unknown) => {
      if (errnoCode(err) !== 'ENOENT') throw this.failed('removing', this.file(volume), err, volume);
    });
  }

  /**
   * The claim on `volume`, or undefined when none is there. Another machine wrote it: a file that
   * is not a valid claim of this very volume (a symlink, a FIFO, garbage), or a claims directory
   * that is a symlink, is an E_STATE_CORRUPT error naming it, and the caller refuses the mount
   * rather than guess. A claims directory that is a plain file holds no claims.
   */
  async read(volume: string): Promise<RestoreClaim | undefined> {
    const path = this.file(volume);
    let text: string | undefined;
    try {
      text = await readFileNoFollow(this.fs, path, volume);
    } catch (err) {
      if (errnoCode(err) === 'ENOTDIR') return undefined;
      throw this.failed('reading', path, err, volume);
    }
    // The common answer (no claim) costs one call; a claim found is checked to be in the store.
    if (text === undefined || !(await this.realDir(volume))) return undefined;
    const claim = parseRecordText(RestoreClaimSchema, text, `restore claim ${path}`, volume);
    if (claim.volume !== volume) {
      throw new StowageError(ErrorCodes.STATE_CORRUPT, `restore claim ${path} names volume ${claim.volume}, not ${volume}`, { volume });
    }
    return claim;
  }
}
