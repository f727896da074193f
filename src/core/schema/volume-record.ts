import { z } from 'zod';
import type { VolumeRecord } from '../backend.js';

const uint = z.number().int().nonnegative().max(2 ** 32);

/**
 * A volume's record as every backend stores it (vfs registry entries, the devicemapper pool
 * state, a gluster volume's option). Backends narrow it where their storage needs more: a
 * name that is a path component, lengths bounded by a gluster option, fields of their own.
 */
export const volumeRecordSchema = z.object({
  name: z.string().min(1),
  /** The defining options as given at create time (never `adopt`). */
  options: z.object({
    size: z.number().int().positive().optional(),
    uid: uint.optional(),
    gid: uint.optional(),
    mode: z.number().int().min(0).max(0o7777).optional(),
    backend: z.record(z.string(), z.string()).optional(),
  }),
  createdAt: z.string(),
  createdBy: z.string(),
  adopted: z.boolean().optional(),
}) satisfies z.ZodType<VolumeRecord>;
