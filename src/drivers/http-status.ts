import { ErrorCodes, StowageError, isStowageError, messageOf, type ErrorCode, type Remedy } from '../core/errors.js';
import { bodyTooLarge } from './http-body.js';

/**
 * The one mapping from error code to HTTP status, for the plugin and the control API alike:
 * a caller's mistake is 4xx on both, whatever protocol it came in on.
 */
const HTTP_STATUS: Partial<Record<ErrorCode, number>> = {
  [ErrorCodes.INVALID_NAME]: 400,
  [ErrorCodes.INVALID_OPTION]: 400,
  [ErrorCodes.INVALID_REQUEST]: 400,
  [ErrorCodes.VOLUME_NOT_FOUND]: 404,
  [ErrorCodes.SNAPSHOT_NOT_FOUND]: 404,
  [ErrorCodes.NODE_NOT_FOUND]: 404,
  [ErrorCodes.MOUNT_NOT_FOUND]: 404,
  [ErrorCodes.SNAPSHOT_EXISTS]: 409,
  [ErrorCodes.STORAGE_FULL]: 507,
  [ErrorCodes.NOT_SUPPORTED]: 501,
  [ErrorCodes.VOLUME_EXISTS]: 409,
  [ErrorCodes.VOLUME_IN_USE]: 409,
  [ErrorCodes.DATA_CONFLICT]: 409,
  [ErrorCodes.CANCELLED]: 409,
  [ErrorCodes.BACKEND_UNAVAILABLE]: 503,
  // Asked of something that is not there, or not now: the asker's to change, not a server fault.
  [ErrorCodes.BACKUP_NOT_FOUND]: 404,
  [ErrorCodes.BACKUP_LOCKED]: 409,
  [ErrorCodes.VOLUME_DATA_MISSING]: 409,
};

export function httpStatusOf(code: ErrorCode): number {
  return HTTP_STATUS[code] ?? 500;
}

/** A failure as both protocols send it; each shell only chooses the body's shape. */
export interface HttpFailure {
  status: number;
  code: ErrorCode;
  /** The core's words, without the remedies: each shell words those for its own users. */
  message: string;
  remedies: readonly Remedy[];
}

/** Anything thrown while serving a request: a StowageError keeps its code, the rest is E_INTERNAL. */
export function failureOf(err: unknown): HttpFailure {
  if (isStowageError(err)) {
    return { status: httpStatusOf(err.code), code: err.code, message: err.message, remedies: err.remedies };
  }
  return { status: httpStatusOf(ErrorCodes.INTERNAL), code: ErrorCodes.INTERNAL, message: `internal error: ${messageOf(err)}`, remedies: [] };
}

/**
 * A path no operation answers. 404 although the code is E_INVALID_REQUEST (400 elsewhere):
 * the status says "no such endpoint", which an HTTP client can tell from a bad field.
 */
export function unknownRoute(method: string, path: string): HttpFailure {
  return { status: 404, code: ErrorCodes.INVALID_REQUEST, message: `stowage does not implement ${method} ${path}`, remedies: [] };
}

/** express's body parser fails with its own errors (an over-long body, an aborted upload). */
export function bodyParserFailure(err: unknown): HttpFailure {
  const type = typeof err === 'object' && err !== null && 'type' in err ? (err as { type: unknown }).type : undefined;
  return failureOf(type === 'entity.too.large' ? bodyTooLarge()
    : new StowageError(ErrorCodes.INVALID_REQUEST, `bad request: ${messageOf(err)}`));
}
