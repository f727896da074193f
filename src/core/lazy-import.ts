import { ErrorCodes, StowageError, errnoCode } from './errors.js';

/**
 * A module loaded on first use (the CLI bundle keeps such code in chunks beside its entry). If
 * stowage's files were replaced after the process started (an upgrade in place), the running
 * process's chunk may be gone: say so and how to recover, instead of a bare module error.
 */
export async function importLazily<T>(load: () => Promise<T>, what: string): Promise<T> {
  try {
    return await load();
  } catch (err) {
    if (errnoCode(err) !== 'ERR_MODULE_NOT_FOUND') throw err;
    throw new StowageError(ErrorCodes.INTERNAL,
      `cannot load ${what}: stowage's files changed after this process started (an upgrade in place?); restart it`, { cause: err });
  }
}
