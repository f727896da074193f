import { request } from 'node:http';
import { ErrorCodes, type ErrorCode, type Remedy } from '../../core/errors.js';
import { z } from 'zod';
import type { JobProgress } from '../../core/backup/service-contract.js';
import type { JobEvent, JobView } from '../control/jobs.js';
import {
  CONTROL_PREFIX, controlEndpoints, controlErrorAnswer, knownRemedies, type ControlEndpoint, type RequestOf, type ResponseOf,
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

/**
 * One call to the daemon's control API over its unix socket. `timeoutMs: 0` waits as long as the
 * daemon works (a snapshot on vfs copies the volume).
 */
export function callDaemon<E extends ControlEndpoint>(socket: string, endpoint: E, body: RequestOf<E>, options: { timeoutMs?: number } = {}): Promise<ResponseOf<E>> {
  const payload = JSON.stringify(body);
  const timeoutMs = options.timeoutMs ?? CALL_TIMEOUT_MS;
  return new Promise<ResponseOf<E>>((resolve, reject) => {
    const req = request({
      socketPath: socket,
      path: `${CONTROL_PREFIX}${endpoint.path}`,
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      timeout: timeoutMs,
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
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs / 1000} s`)));
    req.on('error', (err: NodeJS.ErrnoException) => reject(connectionFailure(socket, err)));
    req.end(payload);
  });
}

function connectionFailure(socket: string, err: NodeJS.ErrnoException): ControlError {
  const notListening = err.code === 'ENOENT' || err.code === 'ECONNREFUSED';
  return new ControlError(notListening
    ? `cannot reach the stowage daemon at ${socket}; is "stowage daemon" running? (choose the socket with --socket or STOWAGE_SOCKET)`
    : `talking to the stowage daemon at ${socket} failed: ${err.message}`, 'unreachable');
}

/**
 * Follows a daemon job: calls `onProgress` for each progress line and resolves with the job as
 * it ended (succeeded or failed: the caller reads `state`). Rejects when the daemon refuses (no
 * such job) or the connection breaks before the end; the job itself goes on either way.
 */
export function followJob(socket: string, id: string, onProgress: (progress: JobProgress) => void): Promise<JobView> {
  const payload = JSON.stringify({ id });
  return new Promise<JobView>((resolve, reject) => {
    const broken = () => reject(new ControlError(`the connection to the stowage daemon at ${socket} broke while following job ${id}; ` +
      `the job may still be running ("stowage job follow ${id}")`, 'unreachable'));
    const req = request({
      socketPath: socket,
      path: `${CONTROL_PREFIX}${controlEndpoints.followJob.path}`,
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
    }, (res) => {
      if (res.statusCode !== 200 || !String(res.headers['content-type']).startsWith('application/x-ndjson')) {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', broken);
        res.on('end', () => {
          try {
            answerOf(socket, res.statusCode === 200 ? 500 : res.statusCode, Buffer.concat(chunks).toString('utf8'));
          } catch (err) {
            reject(err);
          }
          reject(new ControlError(`the daemon at ${socket} sent an unreadable answer (HTTP ${res.statusCode})`, 'unreadable'));
        });
        return;
      }
      let buffered = '';
      let ended: JobView | undefined;
      res.setEncoding('utf8');
      res.on('data', (text: string) => {
        buffered += text;
        let newline: number;
        while ((newline = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, newline);
          buffered = buffered.slice(newline + 1);
          if (line.trim() === '') continue;
          const event = jobEventOf(line);
          if (!event) {
            req.destroy();
            reject(new ControlError(`the daemon at ${socket} sent an unreadable progress line`, 'unreadable'));
            return;
          }
          if (event.type === 'progress') onProgress(event.progress);
          else ended = event.job;
        }
      });
      res.on('error', broken);
      res.on('end', () => (ended ? resolve(ended) : broken()));
    });
    // A daemon gone before its first line (killed, restarted) hangs up: that is a broken follow
    // too, and the job's id is what the user needs to pick it up again.
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') reject(connectionFailure(socket, err));
      else broken();
    });
    req.end(payload);
  });
}

const progressLine = z.object({
  type: z.literal('progress'),
  progress: z.object({
    phase: z.string(), unit: z.enum(['files', 'chunks']).optional(), files: z.number(), bytes: z.number(), totalFiles: z.number().optional(), totalBytes: z.number().optional(),
  }),
});
const endLine = z.object({
  type: z.literal('end'),
  job: z.object({
    id: z.string(), kind: z.string(), target: z.string(), state: z.enum(['running', 'succeeded', 'failed']),
    startedAt: z.string(), finishedAt: z.string().optional(), result: z.unknown().optional(),
    error: z.object({ code: z.string(), message: z.string(), remedies: z.array(z.unknown()).optional() }).optional(),
    note: z.string().max(1000).optional(),
  }).loose(),
});

/** One NDJSON line, checked: a foreign or newer daemon may send what this client cannot read. */
function jobEventOf(line: string): JobEvent | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return undefined;
  }
  const progress = progressLine.safeParse(parsed);
  // The phase is shown, not acted on: a phase this client does not know is still a phase.
  if (progress.success) return progress.data as JobEvent;
  const end = endLine.safeParse(parsed);
  return end.success ? end.data as JobEvent : undefined;
}
