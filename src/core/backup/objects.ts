import { createHash } from 'node:crypto';
import type { z } from 'zod';
import { ErrorCodes, StowageError } from '../errors.js';
import { firstIssue } from '../schema/parse-record.js';
import { VolumeNameSchema } from './format.js';

/** Helpers every part of the library uses on what it reads from or writes to a repository. */

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export function assertVolumeName(volume: string): void {
  if (!VolumeNameSchema.safeParse(volume).success) throw new StowageError(ErrorCodes.INVALID_NAME, `${JSON.stringify(volume)} is not a valid volume name`);
}

export function corrupt(message: string, cause?: unknown): StowageError {
  return new StowageError(ErrorCodes.BACKUP_CORRUPT, message, { cause });
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
