import { randomBytes } from 'node:crypto';
import { ErrorCodes, StowageError } from '../../core/errors.js';
import type { CreateResult } from '../../core/volume-types.js';
import { ControlError } from './client.js';

/** Convoy's form for a volume created without a name: `volume-` and 8 hex digits. */
export function generatedVolumeName(): string {
  return `volume-${randomBytes(4).toString('hex')}`;
}

/** Names tried before giving up: with 32 random bits, a second try is already one in billions. */
const TRIES = 5;

function tooManyTries(): StowageError {
  return new StowageError(ErrorCodes.INTERNAL, `no unused volume name in ${TRIES} tries of volume-<8 hex digits>; give the volume a name`);
}

function nameTaken(err: unknown): boolean {
  return err instanceof ControlError && err.code === ErrorCodes.VOLUME_EXISTS;
}

/**
 * Creates a volume under a generated name. A name that turns out to be taken is never answered
 * as made: a create the daemon answers "already there" (or refuses, the options differing)
 * changed nothing, and the next name is tried.
 */
export async function createUnnamed(create: (name: string) => Promise<CreateResult>, nextName = generatedVolumeName): Promise<{ name: string; result: CreateResult }> {
  for (let attempt = 0; attempt < TRIES; attempt += 1) {
    const name = nextName();
    try {
      const result = await create(name);
      if (result.created) return { name, result };
    } catch (err) {
      if (!nameTaken(err)) throw err;
    }
  }
  throw tooManyTries();
}

/**
 * A generated name no volume has yet, for a restore (which itself refuses a name that exists, so
 * a volume made in between is never written to).
 */
export async function unusedVolumeName(exists: (name: string) => Promise<boolean>, nextName = generatedVolumeName): Promise<string> {
  for (let attempt = 0; attempt < TRIES; attempt += 1) {
    const name = nextName();
    if (!(await exists(name))) return name;
  }
  throw tooManyTries();
}
