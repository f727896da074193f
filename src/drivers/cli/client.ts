import { request } from 'node:http';
import { CONTROL_PREFIX } from '../control/routes.js';

export class ControlError extends Error {
  constructor(message: string, readonly code: string) {
    super(message);
  }
}

/** One call to the daemon's control API over its unix socket. */
export function callDaemon<T>(socket: string, operation: string, body: object = {}): Promise<T> {
  const payload = JSON.stringify(body);
  return new Promise<T>((resolve, reject) => {
    const req = request({
      socketPath: socket,
      path: `${CONTROL_PREFIX}/${operation}`,
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      timeout: 150_000,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown;
        try {
          parsed = JSON.parse(text);
        } catch {
          reject(new ControlError(`the daemon at ${socket} sent an unreadable answer (HTTP ${res.statusCode})`, 'E_PROTOCOL'));
          return;
        }
        const { error, Err } = parsed as { error?: { code: string; message: string }; Err?: string };
        if (res.statusCode !== 200 && error) reject(new ControlError(error.message, error.code));
        else if (res.statusCode !== 200 && Err) reject(new ControlError(Err, 'E_PROTOCOL'));
        else if (res.statusCode !== 200) reject(new ControlError(`the daemon answered HTTP ${res.statusCode}`, 'E_PROTOCOL'));
        else resolve(parsed as T);
      });
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 150 s')));
    req.on('error', (err: NodeJS.ErrnoException) => {
      const unreachable = err.code === 'ENOENT' || err.code === 'ECONNREFUSED';
      reject(new ControlError(unreachable
        ? `cannot reach the stowage daemon at ${socket}; is "stowage daemon" running? (choose the socket with --socket or STOWAGE_SOCKET)`
        : `talking to the stowage daemon at ${socket} failed: ${err.message}`, 'E_UNREACHABLE'));
    });
    req.end(payload);
  });
}
