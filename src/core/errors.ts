/**
 * Every failure stowage reports carries one of these codes. The codes are part of the public
 * contract (CLI exit paths, control API, programmatic API); shells map them to their wire form.
 */
export const ErrorCodes = {
  INVALID_NAME: 'E_INVALID_NAME',
  INVALID_OPTION: 'E_INVALID_OPTION',
  INVALID_REQUEST: 'E_INVALID_REQUEST',
  VOLUME_NOT_FOUND: 'E_VOLUME_NOT_FOUND',
  VOLUME_EXISTS: 'E_VOLUME_EXISTS',
  VOLUME_IN_USE: 'E_VOLUME_IN_USE',
  VOLUME_DATA_MISSING: 'E_VOLUME_DATA_MISSING',
  DATA_CONFLICT: 'E_DATA_CONFLICT',
  SNAPSHOT_NOT_FOUND: 'E_SNAPSHOT_NOT_FOUND',
  SNAPSHOT_EXISTS: 'E_SNAPSHOT_EXISTS',
  NOT_SUPPORTED: 'E_NOT_SUPPORTED',
  NODE_NOT_FOUND: 'E_NODE_NOT_FOUND',
  /** No mount record of the volume on this node with that id or label (a hand unmount, a release). */
  MOUNT_NOT_FOUND: 'E_MOUNT_NOT_FOUND',
  STORAGE_FULL: 'E_STORAGE_FULL',
  BACKEND_UNAVAILABLE: 'E_BACKEND_UNAVAILABLE',
  BACKEND_COMMAND: 'E_BACKEND_COMMAND',
  STATE_CORRUPT: 'E_STATE_CORRUPT',
  BACKUP_NOT_FOUND: 'E_BACKUP_NOT_FOUND',
  BACKUP_OBJECT_MISSING: 'E_BACKUP_OBJECT_MISSING',
  BACKUP_CORRUPT: 'E_BACKUP_CORRUPT',
  BACKUP_LOCKED: 'E_BACKUP_LOCKED',
  /** A long operation stopped on request (a cancelled job, a stopping daemon). */
  CANCELLED: 'E_CANCELLED',
  INTERNAL: 'E_INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/**
 * What a person can do about a failure, as data: the core says what, each shell says how in its
 * own words (the CLI names its commands and flags, the embedding API its methods and options,
 * Docker's `Err` the CLI commands a Docker user would run next).
 */
export type Remedy =
  /** A node that stopped sending heartbeats can be dropped, with its references. */
  | { action: 'forget-node'; node: string }
  /** The volume can be deleted although (possibly dead) nodes still reference it. */
  | { action: 'force-remove'; volume: string }
  /** This node's mount records of the volume can be dropped without asking the container engine. */
  | { action: 'force-release'; volume: string }
  /** Data found where the volume would be can be taken over by a create that asks to adopt it. */
  | { action: 'adopt'; volume: string }
  /** The list of known nodes shows which names exist. */
  | { action: 'list-nodes' }
  /** This node's mount records show which volumes and mount ids exist. */
  | { action: 'list-mounts' }
  /** A second daemon needs a state root of its own. */
  | { action: 'separate-root' }
  /** Another backend offers the capability this one lacks. */
  | { action: 'use-backend'; capability: 'snapshots' }
  /** The backups and snapshots reading the volume can be listed and cancelled. */
  | { action: 'cancel-jobs'; volume: string }
  /** A file-level backup of the volume restores into any backend. */
  | { action: 'file-backup'; volume: string }
  /** The volume (one that holds partial data, say) can be removed, as any volume. */
  | { action: 'remove-volume'; volume: string }
  /** A hand mount (see mountByHand) holds the volume until it is unmounted the same way. */
  | { action: 'hand-unmount'; volume: string; label: string };

export interface StowageErrorDetails {
  volume?: string;
  node?: string;
  cause?: unknown;
  remedies?: readonly Remedy[];
}

export class StowageError extends Error {
  readonly code: ErrorCode;
  readonly volume?: string;
  readonly node?: string;
  /** Empty when there is nothing to offer beyond the message. */
  readonly remedies: readonly Remedy[];

  constructor(code: ErrorCode, message: string, details: StowageErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'StowageError';
    this.code = code;
    this.volume = details.volume;
    this.node = details.node;
    this.remedies = details.remedies ?? [];
  }
}

/** The one "no such volume" failure; every backend and the core say it the same way. */
export function volumeNotFound(name: string): StowageError {
  return new StowageError(ErrorCodes.VOLUME_NOT_FOUND, `volume ${name} does not exist`, { volume: name });
}

export function isStowageError(err: unknown, code?: ErrorCode): err is StowageError {
  return err instanceof StowageError && (code === undefined || err.code === code);
}

/** Wraps anything thrown by a backend so callers only ever see StowageError. */
export function toStowageError(err: unknown, context: string, volume?: string): StowageError {
  if (err instanceof StowageError) return err;
  return new StowageError(ErrorCodes.INTERNAL, `${context}: ${describeCause(err)}`, { volume, cause: err });
}

/** The message of anything thrown, for text that adds its own context around it. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The first non-blank line of a program's output, trimmed; '' when there is none. */
export function firstLine(text: string): string {
  return text.split('\n').map((l) => l.trim()).find((l) => l.length > 0) ?? '';
}

/** Node's system errors carry a string `code` such as ENOENT. */
export function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err as { code: unknown }).code;
    return typeof code === 'string' ? code : undefined;
  }
  return undefined;
}

/**
 * ENOENT, or ESTALE: a path or file handle naming a file another node removed or replaced on
 * shared storage. libuv has no name for ESTALE (116 on Linux), so Node reports it as errno -116
 * without a code.
 */
export function isGoneOrStale(err: unknown): boolean {
  const code = errnoCode(err);
  return code === 'ENOENT' || code === 'ESTALE' || (err as { errno?: unknown } | null)?.errno === -116;
}

/** errno of EDQUOT on Linux: libuv has no name for it, so Node 20 reports code 'Unknown system error -122'. */
const EDQUOT_ERRNO = -122;
const ENOSPC_ERRNO = -28;

function errnoOf(err: unknown): number | undefined {
  const errno = (err as { errno?: unknown } | null)?.errno;
  return typeof errno === 'number' ? errno : undefined;
}

/** The storage is full: no space left (ENOSPC) or a quota reached (EDQUOT, known by errno where Node has no name for it). */
export function isStorageFull(err: unknown): boolean {
  const code = errnoCode(err);
  const errno = errnoOf(err);
  return code === 'ENOSPC' || code === 'EDQUOT' || errno === ENOSPC_ERRNO || errno === EDQUOT_ERRNO;
}

/**
 * A full filesystem or quota (ENOSPC, EDQUOT) as E_STORAGE_FULL, saying which storage is full
 * (`where`) and what to do (`then`); any other error unchanged.
 */
export function asStorageFull(err: unknown, where: string, then: string): unknown {
  if (!isStorageFull(err)) return err;
  return new StowageError(ErrorCodes.STORAGE_FULL, `${where} is full: ${describeCause(err)}; ${then}`, { cause: err });
}

/**
 * The reason an error carries, for people: a system error reads "no space left on device
 * (ENOSPC)" rather than Node's "ENOSPC: no space left on device, write".
 */
export function describeCause(err: unknown): string {
  const code = errnoCode(err);
  const message = messageOf(err);
  if (errnoOf(err) === EDQUOT_ERRNO && code !== 'EDQUOT') return 'disk quota exceeded (EDQUOT)';
  if (code && /^E[A-Z0-9]+$/.test(code)) {
    const text = new RegExp(`^${code}: ([^,]+)`).exec(message)?.[1];
    return `${text ?? message} (${code})`;
  }
  if (err instanceof Error && err.cause !== undefined && !message.includes(describeCause(err.cause))) {
    return `${message}: ${describeCause(err.cause)}`;
  }
  return message;
}
