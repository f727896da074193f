import { hostname } from 'node:os';
import { z } from 'zod';
import type { Backend } from '../../core/backend.js';
import type { JobProgress } from '../../core/backup/service-contract.js';
import { ErrorCodes, StowageError, type ErrorCode } from '../../core/errors.js';
import type { FsPort } from '../../core/fs-port.js';
import type { Logger } from '../../core/logger.js';
import { validateMountDir } from '../../core/mount-dir.js';
import { isValidNodeId } from '../../core/names.js';
import { isPlainObject } from '../../core/schema/option-map.js';
import { firstIssue } from '../../core/schema/parse-record.js';
import type { RemovePolicy } from '../../core/volume-manager.js';

/**
 * What a JavaScript caller hands the embedding API, checked as the daemon's flags and the control
 * API's request bodies are: TypeScript's types are gone at run time, and a string where a boolean
 * belongs (`force: 'false'`) or a typo'd policy (`onRemove: 'Retain'`) must not change what is deleted.
 */

const hasMethods = (value: unknown, ...names: string[]): boolean =>
  typeof value === 'object' && value !== null && names.every((name) => typeof (value as Record<string, unknown>)[name] === 'function');

const flag = (field: string) => z.boolean({ error: `"${field}" must be true or false` }).optional();
const text = (field: string) => z.string({ error: `"${field}" must be a string` }).min(1, `"${field}" must not be empty`);
const stringMap = (field: string) => z.custom<Record<string, string>>((value) => isPlainObject(value) && Object.values(value).every((v) => typeof v === 'string'),
  { error: `"${field}" must be an object of names to string values` });

const progressShape = {
  onProgress: z.custom<(progress: JobProgress) => void>((value) => typeof value === 'function', { error: '"onProgress" must be a function' }).optional(),
  signal: z.custom<AbortSignal>((value) => value instanceof AbortSignal, { error: '"signal" must be an AbortSignal' }).optional(),
};

const stowageOptionsSchema = z.strictObject({
  backend: z.union([
    text('backend'),
    z.custom<Backend>((value) => hasMethods(value, 'init', 'dispose', 'create', 'get', 'list', 'remove', 'attach', 'detach')),
  ], { error: '"backend" must be a backend name (vfs, glusterfs, devicemapper) or an object implementing Backend' }).optional(),
  options: stringMap('options').optional(),
  root: text('root').optional(),
  nodeId: z.string({ error: '"nodeId" must be a string' }).optional(),
  onRemove: z.enum(['delete', 'retain'], { error: '"onRemove" must be "delete" or "retain"' }).optional(),
  logger: z.custom<Logger>((value) => hasMethods(value, 'info', 'warn', 'error'), { error: '"logger" must have info, warn and error methods' }).optional(),
  fs: z.custom<FsPort>((value) => typeof value === 'object' && value !== null, { error: '"fs" must be a file system object (node:fs/promises, memfs)' }).optional(),
});

export const callOptionSchemas = {
  remove: z.strictObject({ retain: flag('retain'), force: flag('force') }),
  createSnapshot: z.strictObject({ consistent: flag('consistent'), force: flag('force'), xattrs: flag('xattrs') }),
  createBackup: z.strictObject({
    dest: text('dest'), snapshot: text('snapshot').optional(), keepSnapshot: flag('keepSnapshot'),
    consistent: flag('consistent'), force: flag('force'), xattrs: flag('xattrs'),
    kind: z.enum(['file', 'block'], { error: '"kind" must be "file" or "block"' }).optional(),
    ...progressShape,
  }),
  listBackups: z.strictObject({ volume: text('volume').optional() }),
  progress: z.strictObject(progressShape),
  restoreVolume: z.strictObject({ ...progressShape, volumeOptions: stringMap('volumeOptions').optional() }),
};

function refusal(code: ErrorCode, what: string, error: z.ZodError): StowageError {
  const issue = error.issues.find((i) => i.code === 'unrecognized_keys');
  if (issue?.code === 'unrecognized_keys') return new StowageError(code, `${what}: unknown option ${JSON.stringify(issue.keys[0])}`);
  const { message } = firstIssue(error);
  return new StowageError(code, `${what}: ${message}`);
}

/**
 * The options of one call (`what` names it in the error), or {} when none were given. Only an
 * object literal is options: a Map or a class instance would be read through its getters.
 */
export function callOptions<S extends z.ZodType>(schema: S, raw: unknown, what: string): z.output<S> {
  raw ??= {};
  if (!isPlainObject(raw)) throw new StowageError(ErrorCodes.INVALID_REQUEST, `${what}: the options must be an object literal`);
  const result = schema.safeParse(raw);
  if (!result.success) throw refusal(ErrorCodes.INVALID_REQUEST, what, result.error);
  return result.data as z.output<S>;
}

export interface CheckedStowageOptions {
  backend: string | Backend;
  backendOptions: Record<string, string>;
  root: string;
  nodeId: string;
  onRemove: RemovePolicy;
  logger?: Logger;
  fs?: FsPort;
}

/** createStowage's options with their defaults, refused as the daemon refuses its flags. */
export function checkStowageOptions(raw: unknown): CheckedStowageOptions {
  if (raw !== undefined && !isPlainObject(raw)) throw new StowageError(ErrorCodes.INVALID_OPTION, 'createStowage: the options must be an object literal');
  const result = stowageOptionsSchema.safeParse(raw ?? {});
  if (!result.success) throw refusal(ErrorCodes.INVALID_OPTION, 'createStowage', result.error);
  const given = result.data;
  const root = given.root ?? '/var/lib/stowage';
  try {
    validateMountDir(root);
  } catch {
    throw new StowageError(ErrorCodes.INVALID_OPTION, `createStowage: "root" ${JSON.stringify(root)} must be an absolute path other than /, without "." or ".." parts (a directory of stowage's own)`);
  }
  const nodeId = given.nodeId ?? hostname();
  if (!isValidNodeId(nodeId)) {
    throw new StowageError(ErrorCodes.INVALID_OPTION, `createStowage: ${given.nodeId === undefined ? `the host name ${JSON.stringify(nodeId)}, the default "nodeId",` : `"nodeId" ${JSON.stringify(nodeId)}`} is not a node id: use up to 63 letters, digits, "_", "." and "-"`);
  }
  return {
    backend: given.backend ?? 'vfs', backendOptions: given.options ?? {}, root, nodeId, onRemove: given.onRemove ?? 'delete',
    ...(given.logger ? { logger: given.logger } : {}), ...(given.fs ? { fs: given.fs } : {}),
  };
}
