import { z } from 'zod';
import type { VolumeRecord } from '../../core/backend.js';
import { ErrorCodes, StowageError, volumeNotFound } from '../../core/errors.js';
import { parseRecordText } from '../../core/schema/parse-record.js';
import { volumeRecordSchema } from '../../core/schema/volume-record.js';
import { GLUSTER_VOLUME_NAME } from './glusterfs-options.js';
import type { GlusterVolume } from './parsers.js';

/** The volume option that holds a stowage volume's record: glusterd itself is the registry. */
export const RECORD_OPTION = 'user.stowage.record';

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const HOST = /^[A-Za-z0-9][A-Za-z0-9.:[\]-]{0,252}$/;

/**
 * One stowage deployment: the nodes that share one state pool. The pool's gluster volume id is
 * its identity (a name can be reused by a re-created pool or typed twice by two administrators;
 * the id glusterd generated cannot).
 */
export const deploymentSchema = z.object({ pool: z.string().regex(GLUSTER_VOLUME_NAME), id: z.string().regex(UUID) });
export type Deployment = z.infer<typeof deploymentSchema>;

/** A brick stowage made: where, and the gluster peer that holds it (host names can be aliased, peer ids cannot). */
export const recordedBrickSchema = z.object({
  host: z.string().regex(HOST),
  path: z.string().max(4096).regex(/^\/[^\0]*$/),
  peer: z.string().regex(UUID),
});
export type RecordedBrick = z.infer<typeof recordedBrickSchema>;

const storedRecordSchema = volumeRecordSchema.extend({
  name: z.string().min(1).max(255),
  createdAt: z.string().max(64),
  createdBy: z.string().max(255),
  /** Absent in records written before deployments were recorded (see `classify`). */
  deployment: deploymentSchema.optional(),
  /** The bricks stowage made for this volume; absent for adopted volumes, whose bricks stowage never deletes. */
  bricks: z.array(recordedBrickSchema).max(256).optional(),
  /** Whether a gluster limit enforces `options.size`; false when made on a node with glusterfs.quota=false. */
  sizeEnforced: z.boolean().optional(),
});
export type StoredRecord = z.infer<typeof storedRecordSchema>;

/** What a gluster volume under our prefix is to this deployment. */
export type Ownership =
  | { kind: 'none' }
  /** A gluster volume without a stowage record: half-made or someone else's; only `adopt` takes it. */
  | { kind: 'unmanaged' }
  | { kind: 'ours'; record: StoredRecord }
  | { kind: 'foreign'; record: StoredRecord; owner: Deployment }
  /** A record of an earlier version that names no deployment and that this one cannot prove it made. */
  | { kind: 'unclaimed'; record: StoredRecord };

/** The stored record of a gluster volume (hostile input: any peer of the trusted pool can set it). */
export function storedRecordOf(volume: GlusterVolume, name: string): StoredRecord | undefined {
  const raw = volume.options[RECORD_OPTION];
  if (raw === undefined) return undefined;
  const record = parseRecordText(storedRecordSchema, raw, `the ${RECORD_OPTION} option of gluster volume ${volume.name}`, name);
  if (record.name !== name) {
    throw new StowageError(ErrorCodes.STATE_CORRUPT,
      `the ${RECORD_OPTION} option of gluster volume ${volume.name} does not describe volume ${name}`, { volume: name });
  }
  return record;
}

export function classify(volume: GlusterVolume | undefined, name: string, mine: Deployment): Ownership {
  if (!volume) return { kind: 'none' };
  const record = storedRecordOf(volume, name);
  if (!record) return { kind: 'unmanaged' };
  if (!record.deployment) return { kind: 'unclaimed', record };
  if (record.deployment.id !== mine.id) return { kind: 'foreign', record, owner: record.deployment };
  return { kind: 'ours', record };
}

/** The core's view of a stored record: the fields every backend has. */
export function volumeRecordOf(stored: StoredRecord): VolumeRecord {
  const { name, options, createdAt, createdBy, adopted } = stored;
  return { name, options, createdAt, createdBy, ...(adopted ? { adopted } : {}) };
}

/** The refusal for a volume this deployment does not own; `action` is what was refused. */
export function notOurs(ownership: Ownership, gluster: string, name: string, mine: Deployment, action: string): StowageError {
  if (ownership.kind === 'foreign') {
    return new StowageError(ErrorCodes.DATA_CONFLICT,
      `gluster volume ${gluster} belongs to another stowage deployment (state pool ${ownership.owner.pool}, id ${ownership.owner.id}), ` +
      `not to this one (state pool ${mine.pool}, id ${mine.id}), so this deployment does not ${action} it; use it from its own ` +
      `deployment, or choose another name for volume ${name}`, { volume: name });
  }
  if (ownership.kind === 'unclaimed') {
    return new StowageError(ErrorCodes.DATA_CONFLICT,
      `gluster volume ${gluster} has a stowage record of an earlier version that records no deployment, and its creator ` +
      `${ownership.record.createdBy} is not a node of this deployment (no node record in state pool ${mine.pool}), so this ` +
      `deployment does not ${action} it; if it is this deployment's volume, claim it by adopting it`,
      { volume: name, remedies: [{ action: 'adopt', volume: name }] });
  }
  return volumeNotFound(name);
}
