import { createHash, webcrypto } from 'node:crypto';
import type { z } from 'zod';
import { ErrorCodes, isStowageError, messageOf, StowageError } from '../errors.js';
import { firstIssue } from '../schema/parse-record.js';
import { VolumeNameSchema } from './format.js';

/** Helpers every part of the library uses on what it reads from or writes to a repository. */

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Below this, hashing on the calling thread costs less than a trip to the thread pool. */
const HASH_OFF_THREAD_FROM = 128 * 1024;

/**
 * sha256, computed on libuv's thread pool for large data (WebCrypto's digest runs there):
 * in a restore or verify the main thread is the busy one, and hashing was a tenth of its time.
 */
export async function sha256OffThread(data: Uint8Array): Promise<string> {
  if (data.length < HASH_OFF_THREAD_FROM) return sha256(data);
  return Buffer.from(await webcrypto.subtle.digest('SHA-256', data)).toString('hex');
}

export function assertVolumeName(volume: string): void {
  if (!VolumeNameSchema.safeParse(volume).success) throw new StowageError(ErrorCodes.INVALID_NAME, `${JSON.stringify(volume)} is not a valid volume name`);
}

export function corrupt(message: string, cause?: unknown): StowageError {
  return new StowageError(ErrorCodes.BACKUP_CORRUPT, message, { cause });
}

/** Whether a listed record failed to load through a fault of its own (damaged, forged, misplaced), not of the store. */
export function isRecordFault(err: unknown): boolean {
  return isStowageError(err, ErrorCodes.BACKUP_CORRUPT) || isStowageError(err, ErrorCodes.INVALID_REQUEST);
}

/** A listed record that does not load, said with its place: an object to look at by hand. */
export function unreadableRecord(key: string, location: string, err: unknown): StowageError {
  return new StowageError(ErrorCodes.BACKUP_CORRUPT, `${key} in ${location} is no backup record stowage can read ` +
    `(${messageOf(err)}); put it right from a copy of the repository, or move it out of the repository by hand`, { cause: err });
}

/** Parses an object read from the repository; failures name the object. */
export function parseObject<S extends z.ZodType>(schema: S, data: Buffer | string, what: string): z.infer<S> {
  let value: unknown;
  try {
    value = JSON.parse(typeof data === 'string' ? data : data.toString('utf8'));
  } catch (err) {
    throw corrupt(`${what} is not valid JSON (corrupt or truncated)`, err);
  }
  const result = schema.safeParse(value);
  if (!result.success) {
    const { where, message } = firstIssue(result.error);
    throw corrupt(`${what} is not in the expected format${where}: ${message}`);
  }
  return result.data;
}

/** A store openOrInit refuses to make a repository in: it holds `key`, and no repository config. */
export function notEmpty(location: string, key: string): StowageError {
  return new StowageError(ErrorCodes.INVALID_REQUEST, `${location} holds no backup repository but is not empty (${JSON.stringify(key.slice(0, 200))} ` +
    'is there): a new repository is made only where nothing is stored yet. Give a new or empty directory (or bucket prefix), e.g. one below this one');
}
