import type { CreateRequest, Lease } from './backend.js';
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
