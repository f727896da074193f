/**
 * A keep-alive client for the plugin socket that sends requests the way dockerd does: POST with
 * a JSON body and no Content-Type. One Agent keeps up to `maxSockets` connections open.
 */
import { Agent, request } from 'node:http';

export type PluginReply = Record<string, unknown>;

/** A plugin answer carrying `Err`, or a non-JSON answer. */
export class PluginError extends Error {}

function pathOf(method: string): string {
  return method.includes('.') ? `/${method}` : `/VolumeDriver.${method}`;
}

interface RawOptions {
  agent: Agent | false;
  timeoutMs: number;
}

/** One request; rejects on connection errors, timeouts, non-JSON bodies and `Err` answers. */
function post(socket: string, method: string, body: unknown, opts: RawOptions): Promise<PluginReply> {
  const payload = Buffer.from(JSON.stringify(body ?? {}), 'utf8');
  const path = pathOf(method);
  return new Promise<PluginReply>((resolve, reject) => {
    const req = request({
      socketPath: socket,
      path,
      method: 'POST',
      agent: opts.agent,
      headers: { 'content-length': payload.length },
      timeout: opts.timeoutMs,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          reject(new PluginError(`${path}: HTTP ${res.statusCode ?? 0} with a non-JSON body: ${text.slice(0, 200)}`));
          return;
        }
        if (typeof json !== 'object' || json === null || Array.isArray(json)) {
          reject(new PluginError(`${path}: HTTP ${res.statusCode ?? 0}, not a JSON object: ${text.slice(0, 200)}`));
          return;
        }
        const reply = json as PluginReply;
        if (typeof reply.Err === 'string' && reply.Err !== '') {
          reject(new PluginError(`${path} ${JSON.stringify(body).slice(0, 120)}: ${reply.Err}`));
          return;
        }
        resolve(reply);
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${path}: no answer from ${socket} within ${opts.timeoutMs} ms`)));
    req.on('error', reject);
    req.end(payload);
  });
}

export class KeepAliveClient {
  private readonly agent: Agent;

  constructor(readonly socket: string, readonly maxSockets = 16, private readonly timeoutMs = 60_000) {
    this.agent = new Agent({ keepAlive: true, maxSockets });
  }

  call(method: string, body: unknown = {}): Promise<PluginReply> {
    return post(this.socket, method, body, { agent: this.agent, timeoutMs: this.timeoutMs });
  }

  /** Names in a List answer. */
  async listNames(): Promise<string[]> {
    const reply = await this.call('List');
    if (!Array.isArray(reply.Volumes)) throw new PluginError(`List answered without a Volumes array`);
    return (reply.Volumes as Array<{ Name?: unknown }>).map((v) => String(v.Name));
  }

  close(): void {
    this.agent.destroy();
  }
}

/** One request on a fresh connection (no agent): what a poller uses while a daemon starts. */
export function callOnce(socket: string, method: string, body: unknown = {}, timeoutMs = 60_000): Promise<PluginReply> {
  return post(socket, method, body, { agent: false, timeoutMs });
}

/** True for the errors a socket gives while nobody listens on it yet. */
export function isNotListening(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 'ENOENT' || code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === 'EPIPE';
}
