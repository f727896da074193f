import { ErrorCodes, type ErrorCode } from '../core/errors.js';

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
  [ErrorCodes.SNAPSHOT_EXISTS]: 409,
  [ErrorCodes.STORAGE_FULL]: 507,
  [ErrorCodes.NOT_SUPPORTED]: 501,
  [ErrorCodes.VOLUME_EXISTS]: 409,
  [ErrorCodes.VOLUME_IN_USE]: 409,
  [ErrorCodes.DATA_CONFLICT]: 409,
  [ErrorCodes.BACKEND_UNAVAILABLE]: 503,
};

export function httpStatusOf(code: ErrorCode): number {
  return HTTP_STATUS[code] ?? 500;
}
