import type { Backend, CreateRequest, Lease } from './backend.js';
import { ErrorCodes, StowageError, isStowageError, messageOf } from './errors.js';
import type { VolumeOptions } from './options.js';

/**
 * The one place a volume record is built: `adopt` is an instruction for this create, not a
 * defining option, so it never reaches the record.
 */
export function createRequest(
  name: string,
  options: VolumeOptions,
  origin: { createdAt: string; createdBy: string },
  lease?: Lease,
): CreateRequest {
  const { adopt, ...defining } = options;
  return {
    record: { name, options: defining, createdAt: origin.createdAt, createdBy: origin.createdBy },
    adopt: adopt === true,
    ...(lease ? { lease } : {}),
  };
}

/**
 * A new volume whose follow-up step failed (a restore's marks) goes again, never retained: it
 * holds nothing yet. `removed` runs once it is gone. Then the create fails, saying how.
 */
export async function undoCreate(backend: Backend, name: string, lease: Lease, err: unknown, removed: () => Promise<void>): Promise<never> {
  const undo = await backend.remove(name, { retain: false, lease }).then(() => undefined, (e: unknown) => e);
  if (undo === undefined) await removed();
  throw new StowageError(isStowageError(err) ? err.code : ErrorCodes.INTERNAL,
    `creating volume ${name} failed: ${messageOf(err)}; ` +
    (undo === undefined ? 'the new volume was removed again' : `removing the new volume failed too (${messageOf(undo)})`),
    { volume: name, cause: err, remedies: undo === undefined ? [] : [{ action: 'remove-volume', volume: name }] });
}
