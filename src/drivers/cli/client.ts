import { request } from 'node:http';
import { ErrorCodes, type ErrorCode, type Remedy } from '../../core/errors.js';
import {
  CONTROL_PREFIX, controlErrorAnswer, knownRemedies, type ControlEndpoint, type RequestOf, type ResponseOf,
} from '../control/endpoints.js';

/**
 * How a call to the daemon failed: `refused` (the daemon answered with an error, `code` says
 * which when it is one of ErrorCodes), `unreachable` (nothing answers on the socket, or the
 * connection broke) or `unreadable` (something answered, but not as the daemon does). The two
 * client-side kinds are not ErrorCodes: those name what the core found, not a broken socket.
 */
export type ControlFailureKind = 'refused' | 'unreachable' | 'unreadable';

export class ControlError extends Error {
  constructor(message: string, readonly kind: ControlFailureKind, readonly code?: ErrorCode, readonly remedies: readonly Remedy[] = []) {
    super(message);
    this.name = 'ControlError';
  }
}

const KNOWN_CODES = new Set<string>(Object.values(ErrorCodes));
const isErrorCode = (code: string): code is ErrorCode => KNOWN_CODES.has(code);

const CALL_TIMEOUT_MS = 150_000;

function answerOf(socket: string, status: number | undefined, text: string): object {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new ControlError(`the daemon at ${socket} sent an unreadable answer (HTTP ${status})`, 'unreadable');
  }
  if (status === 200 && typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) return parsed;
  const failure = controlErrorAnswer.safeParse(parsed);
  if (status !== 200 && failure.success) {
    const { code, message, remedies } = failure.data.error;
    throw new ControlError(message, 'refused', isErrorCode(code) ? code : undefined, knownRemedies(remedies));
  }
  // A plugin-protocol answer: something serves the socket, but not this version's control API.
  const err = (parsed as { Err?: unknown } | null)?.Err;
  if (status !== 200 && typeof err === 'string') throw new ControlError(err, 'refused');
  throw new ControlError(`the daemon at ${socket} sent an unreadable answer (HTTP ${status})`, 'unreadable');
}

/** One call to the daemon's control API over its unix socket. */
export function callDaemon<E extends ControlEndpoint>(socket: string, endpoint: E, body: RequestOf<E>): Promise<ResponseOf<E>> {
  const payload = JSON.stringify(body);
  return new Promise<ResponseOf<E>>((resolve, reject) => {
    const req = request({
      socketPath: socket,
      path: `${CONTROL_PREFIX}${endpoint.path}`,
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      timeout: CALL_TIMEOUT_MS,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (err) => reject(new ControlError(`talking to the stowage daemon at ${socket} failed: ${err.message}`, 'unreachable')));
      res.on('end', () => {
        try {
          // The server's handler is typed with ResponseOf<E>; the answer is its JSON.
          resolve(answerOf(socket, res.statusCode, Buffer.concat(chunks).toString('utf8')) as ResponseOf<E>);
        } catch (err) {
          reject(err);
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${CALL_TIMEOUT_MS / 1000} s`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      const notListening = err.code === 'ENOENT' || err.code === 'ECONNREFUSED';
      reject(new ControlError(notListening
        ? `cannot reach the stowage daemon at ${socket}; is "stowage daemon" running? (choose the socket with --socket or STOWAGE_SOCKET)`
        : `talking to the stowage daemon at ${socket} failed: ${err.message}`, 'unreachable'));
    });
    req.end(payload);
  });
}
