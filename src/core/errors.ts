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
  STORAGE_FULL: 'E_STORAGE_FULL',
  BACKEND_UNAVAILABLE: 'E_BACKEND_UNAVAILABLE',
  BACKEND_COMMAND: 'E_BACKEND_COMMAND',
  STATE_CORRUPT: 'E_STATE_CORRUPT',
  INTERNAL: 'E_INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export interface StowageErrorDetails {
  volume?: string;
  node?: string;
  cause?: unknown;
}

export class StowageError extends Error {
  readonly code: ErrorCode;
  readonly volume?: string;
  readonly node?: string;

  constructor(code: ErrorCode, message: string, details: StowageErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'StowageError';
    this.code = code;
    this.volume = details.volume;
    this.node = details.node;
  }
}

export function isStowageError(err: unknown, code?: ErrorCode): err is StowageError {
  return err instanceof StowageError && (code === undefined || err.code === code);
}

/** Wraps anything thrown by a backend so callers only ever see StowageError. */
export function toStowageError(err: unknown, context: string, volume?: string): StowageError {
  if (err instanceof StowageError) return err;
  return new StowageError(ErrorCodes.INTERNAL, `${context}: ${describeCause(err)}`, { volume, cause: err });
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
 * The reason an error carries, for people: a system error reads "no space left on device
 * (ENOSPC)" rather than Node's "ENOSPC: no space left on device, write".
 */
export function describeCause(err: unknown): string {
  const code = errnoCode(err);
  const message = err instanceof Error ? err.message : String(err);
  if (code && /^E[A-Z0-9]+$/.test(code)) {
    const text = new RegExp(`^${code}: ([^,]+)`).exec(message)?.[1];
    return `${text ?? message} (${code})`;
  }
  if (err instanceof Error && err.cause !== undefined && !message.includes(describeCause(err.cause))) {
    return `${message}: ${describeCause(err.cause)}`;
  }
  return message;
}
