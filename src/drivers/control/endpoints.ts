import { z } from 'zod';
import type { SnapshotRecord } from '../../core/backend.js';
import type { BackupDetail, BackupSummary } from '../../core/backup/service-contract.js';
import type { InvalidNodeRecord, NodeView } from '../../core/cluster/node-record.js';
import { ErrorCodes, StowageError, type Remedy } from '../../core/errors.js';
import type { HandMount } from '../../core/mount-reconcile.js';
import type { MountRecordView } from '../../core/mount-table.js';
import type { CreateResult, RemoveResult, VolumeInfo } from '../../core/volume-manager.js';
import { needsStringField } from '../http-body.js';
import type { HttpFailure } from '../http-status.js';
import type { JobEvent, JobView } from './jobs.js';

/** The control API's paths start here, on the same socket as Docker's plugin calls. */
export const CONTROL_PREFIX = '/stowage/v1';

/**
 * One control operation: where it is served, the schema its request must pass (it arrives on a
 * socket, so the server trusts nothing the schema did not check), and what it answers.
 */
export interface ControlEndpoint<Req extends z.ZodType = z.ZodType, Res = unknown> {
  readonly path: string;
  readonly request: Req;
  /** Never set: it carries the answer's type from the server's handler to the client's call. */
  readonly response?: Res;
}

/** What a caller sends: the schema's input (optional fields may be left out). */
export type RequestOf<E extends ControlEndpoint> = z.input<E['request']>;
/** What the handler gets once the request passed its schema. */
export type ValidRequestOf<E extends ControlEndpoint> = z.output<E['request']>;
export type ResponseOf<E extends ControlEndpoint> = NonNullable<E['response']>;

function endpoint<Res>() {
  return <Req extends z.ZodType>(path: string, request: Req): ControlEndpoint<Req, Res> => ({ path, request });
}

const text = (field: string) => z.string({ error: needsStringField(field) }).min(1, { error: needsStringField(field) });
const flag = (field: string) => z.boolean({ error: `the field "${field}" must be true or false` }).optional();
const nothing = z.object({});
type Empty = Record<string, never>;

/**
 * Volume options: their names and values are checked by the core's option parser (the one
 * Docker's Opts go through); here only that they are an object, so a string or a list is refused
 * as a request, not turned into options named "0", "1", ...
 */
const optionObject = z.custom<Record<string, string>>((value) => typeof value === 'object' && value !== null && !Array.isArray(value),
  { error: 'the field "options" must be an object of option names and values' }).optional();

const jobRequest = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('backup-create'), volume: text('volume'), dest: text('dest'),
    snapshot: text('snapshot').optional(), keepSnapshot: flag('keepSnapshot'), consistent: flag('consistent'), force: flag('force'),
    xattrs: flag('xattrs'),
    // `kind` names the job: the kind of backup is `backupKind`.
    backupKind: z.enum(['file', 'block'], { error: 'the field "backupKind" must be file or block' }).optional(),
  }),
  z.object({
    kind: z.literal('restore'), name: text('name'), url: text('url'),
    // Checked by the core's option parser, as for create.
    options: optionObject,
  }),
  z.object({ kind: z.literal('backup-verify'), url: text('url') }),
  z.object({ kind: z.literal('backup-delete'), url: text('url') }),
], { error: 'the field "kind" must be one of backup-create, restore, backup-verify, backup-delete' });
export type JobRequest = z.output<typeof jobRequest>;

export const controlEndpoints = {
  create: endpoint<CreateResult>()('/create', z.object({
    name: text('name'),
    // Checked by the core's option parser, the same one Docker's Opts go through, so both
    // protocols name a bad option in the same words.
    options: optionObject,
  })),
  remove: endpoint<RemoveResult>()('/remove', z.object({ name: text('name'), retain: flag('retain'), force: flag('force') })),
  list: endpoint<{ volumes: VolumeInfo[] }>()('/list', nothing),
  inspect: endpoint<VolumeInfo>()('/inspect', z.object({ name: text('name') })),
  info: endpoint<Record<string, unknown>>()('/info', nothing),
  /** Without a name, the daemon makes one from the time (see generatedSnapshotName). */
  createSnapshot: endpoint<SnapshotRecord>()('/snapshots/create', z.object({
    volume: text('volume'), name: text('name').optional(), consistent: flag('consistent'), force: flag('force'), xattrs: flag('xattrs'),
  })),
  listSnapshots: endpoint<{ snapshots: SnapshotRecord[] }>()('/snapshots/list', z.object({ volume: text('volume') })),
  inspectSnapshot: endpoint<SnapshotRecord>()('/snapshots/inspect', z.object({ volume: text('volume'), name: text('name') })),
  deleteSnapshot: endpoint<Empty>()('/snapshots/delete', z.object({ volume: text('volume'), name: text('name') })),
  nodes: endpoint<{ nodes: NodeView[]; invalid: InvalidNodeRecord[] }>()('/nodes', nothing),
  forgetNode: endpoint<Empty>()('/nodes/forget', z.object({ node: text('node') })),
  mounts: endpoint<{ mounts: MountRecordView[] }>()('/mounts', nothing),
  release: endpoint<{ released: MountRecordView[] }>()('/mounts/release', z.object({
    name: text('name'), id: text('id').optional(), force: flag('force'),
  })),
  /** A hand mount (see mountByHand in the core); `label` defaults to the CLI's. */
  mountByHand: endpoint<HandMount>()('/mounts/hand', z.object({ name: text('name'), label: text('label').optional() })),
  unmountByHand: endpoint<HandMount & { remaining: number }>()('/mounts/hand/unmount', z.object({
    name: text('name'), label: text('label').optional(),
  })),
  listBackups: endpoint<{ backups: BackupSummary[] }>()('/backups/list', z.object({ dest: text('dest'), volume: text('volume').optional() })),
  inspectBackup: endpoint<BackupDetail>()('/backups/inspect', z.object({ url: text('url') })),
  /** Starts a long operation as a job; the answer comes at once, the job's end through followJob. */
  startJob: endpoint<JobView>()('/jobs/start', jobRequest),
  listJobs: endpoint<{ jobs: JobView[] }>()('/jobs/list', nothing),
  inspectJob: endpoint<JobView>()('/jobs/inspect', z.object({ id: text('id') })),
  cancelJob: endpoint<JobView>()('/jobs/cancel', z.object({ id: text('id') })),
  /**
   * Not a JSON answer but a stream of NDJSON lines, one JobEvent each, the last of type "end";
   * a client that goes away only stops following (see followJob in the CLI's client).
   */
  followJob: endpoint<JobEvent>()('/jobs/follow', z.object({ id: text('id') })),
} as const;

/** Checks a request against its endpoint's schema; the first problem becomes the error. */
export function parseRequest<E extends ControlEndpoint>(endpoint: E, body: unknown): ValidRequestOf<E> {
  const result = endpoint.request.safeParse(body);
  if (result.success) return result.data as ValidRequestOf<E>;
  const message = result.error.issues[0]?.message ?? 'the request does not match the operation';
  throw new StowageError(ErrorCodes.INVALID_REQUEST, message);
}

/** How the control API answers a failure (Docker's calls answer `{ Err }` instead). */
/** Remedies travel as data; the client words them (see drivers/remedies.ts). */
export interface ControlErrorBody {
  error: { code: string; message: string; remedies?: readonly Remedy[] };
}

export function controlErrorBody({ code, message, remedies }: HttpFailure): ControlErrorBody {
  return { error: { code, message, ...(remedies.length > 0 ? { remedies } : {}) } };
}

const remedySchema: z.ZodType<Remedy> = z.discriminatedUnion('action', [
  z.object({ action: z.literal('forget-node'), node: z.string() }),
  z.object({ action: z.literal('force-remove'), volume: z.string() }),
  z.object({ action: z.literal('force-release'), volume: z.string() }),
  z.object({ action: z.literal('adopt'), volume: z.string() }),
  z.object({ action: z.literal('list-nodes') }),
  z.object({ action: z.literal('list-mounts') }),
  z.object({ action: z.literal('separate-root') }),
  z.object({ action: z.literal('use-backend'), capability: z.literal('snapshots') }),
  z.object({ action: z.literal('cancel-jobs'), volume: z.string() }),
  z.object({ action: z.literal('file-backup'), volume: z.string() }),
  z.object({ action: z.literal('remove-volume'), volume: z.string() }),
  z.object({ action: z.literal('hand-unmount'), volume: z.string(), label: z.string() }),
]);

/** Remedies this client knows how to word; one it does not (a newer daemon's) is left out, not fatal. */
export function knownRemedies(raw: readonly unknown[] | undefined): Remedy[] {
  return (raw ?? []).flatMap((r) => {
    const parsed = remedySchema.safeParse(r);
    return parsed.success ? [parsed.data] : [];
  });
}

/** The daemon's error answer as the client reads it: checked, since a foreign server may answer. */
export const controlErrorAnswer = z.object({
  error: z.object({ code: z.string(), message: z.string(), remedies: z.array(z.unknown()).optional() }),
});
