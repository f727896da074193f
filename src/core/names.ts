import { ErrorCodes, StowageError } from './errors.js';

/** Longest accepted name; leaves room in a 255-byte path component for the suffixes stowage adds. */
export const MAX_NAME_LENGTH = 128;

/** Docker's own rule for volume names (daemon/names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`). */
const DOCKER_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]+$/;

/**
 * Throws E_INVALID_NAME, with the precise reason, unless `name` is a Docker-compatible volume
 * name that is also safe as a single path component everywhere stowage uses it.
 */
export function validateVolumeName(name: unknown, what = 'volume name'): string {
  const fail = (why: string): never => {
    const shown = typeof name === 'string' ? JSON.stringify(name.slice(0, 80)) : String(name);
    throw new StowageError(ErrorCodes.INVALID_NAME, `invalid ${what} ${shown}: ${why}`);
  };
  if (typeof name !== 'string') return fail('a name must be a string');
  if (name.length === 0) return fail('the name is empty');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) return fail('control characters are not allowed');
  if (name.includes('/') || name.includes('\\')) return fail('path separators are not allowed');
  if (name.includes('..')) return fail('".." is not allowed');
  if (name.length > MAX_NAME_LENGTH) return fail(`longer than ${MAX_NAME_LENGTH} characters`);
  // A character outside the set says more than the length ("é" is one character, and the wrong one).
  if (name.length < 2 && /^[A-Za-z0-9]$/.test(name)) return fail('a name needs at least 2 characters');
  if (!DOCKER_NAME.test(name)) {
    return fail('use letters, digits, "_", "." and "-", starting with a letter or digit');
  }
  return name;
}

const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** Node ids name files in the shared cluster directory: one safe path component, like volume names. */
export function isValidNodeId(id: unknown): id is string {
  return typeof id === 'string' && NODE_ID.test(id);
}

export function validateNodeId(id: unknown, what = 'node id'): string {
  if (isValidNodeId(id)) return id;
  const shown = typeof id === 'string' ? JSON.stringify(id.slice(0, 80)) : String(id);
  throw new StowageError(ErrorCodes.INVALID_NAME, `invalid ${what} ${shown}: use up to 63 letters, digits, "_", "." and "-", starting with a letter or digit`);
}

/** Mount IDs come from Docker (random hex) or embedders; they are keys, never paths. */
export const MAX_MOUNT_ID_LENGTH = 256;

export function isValidMountId(id: unknown): id is string {
  // `__proto__`: mount records pass through plain objects (the records file, its schema), where
  // that key is the prototype's setter, so its record would be lost at the next start.
  // eslint-disable-next-line no-control-regex
  return typeof id === 'string' && id.length > 0 && id.length <= MAX_MOUNT_ID_LENGTH && !/[\u0000-\u001f\u007f]/.test(id) && id !== '__proto__';
}

export function isValidVolumeName(name: unknown): name is string {
  try {
    validateVolumeName(name);
    return true;
  } catch {
    return false;
  }
}
