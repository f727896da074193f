/**
 * A keep-alive client for the plugin socket that sends requests the way dockerd does: POST with
 * a JSON body and no Content-Type. One Agent keeps up to `maxSockets` connections open.
 */
import { Agent } from 'node:http';
import { socketRequest } from '../test/helpers/plugin-client.js';

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
async function post(socket: string, method: string, body: unknown, opts: RawOptions): Promise<PluginReply> {
  const path = pathOf(method);
  const res = await socketRequest(socket, path, body ?? {}, { agent: opts.agent, timeoutMs: opts.timeoutMs });
  if (typeof res.json !== 'object' || res.json === null || Array.isArray(res.json)) {
    throw new PluginError(`${path}: HTTP ${res.status}, not a JSON object: ${res.text.slice(0, 200)}`);
  }
  const reply = res.json as PluginReply;
  if (typeof reply.Err === 'string' && reply.Err !== '') {
    throw new PluginError(`${path} ${JSON.stringify(body).slice(0, 120)}: ${reply.Err}`);
  }
  return reply;
}

/** The names in a List answer's bytes; throws when it is not a List answer without `Err`. */
export function listedNames(body: Buffer): string[] {
  let reply: unknown;
  try { reply = JSON.parse(body.toString('utf8')); } catch { throw new PluginError(`List answered with something other than JSON: ${body.subarray(0, 200).toString()}`); }
  const volumes = (reply as { Volumes?: unknown; Err?: unknown } | null);
  if (typeof volumes?.Err === 'string' && volumes.Err !== '') throw new PluginError(`List: ${volumes.Err}`);
  if (!Array.isArray(volumes?.Volumes)) throw new PluginError('List answered without a Volumes array');
  return (volumes.Volumes as Array<{ Name?: unknown }>).map((v) => String(v.Name));
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

  /**
   * One List's latency (sending to the answer's last byte) and the answer's bytes, left for
   * `listedNames` to check. At 10 000 volumes an answer is 700 KB: decoding and parsing it between
   * timed Lists made this client collect garbage, and V8's collector threads took the second CPU
   * from the plugin, in the middle of the next List.
   */
  async listTimed(): Promise<{ body: Buffer; ms: number }> {
    const sentAt = performance.now();
    const res = await socketRequest(this.socket, pathOf('List'), {}, { agent: this.agent, timeoutMs: this.timeoutMs, rawBody: true });
    if (res.status !== 200 || !res.body) throw new PluginError(`List: HTTP ${res.status}`);
    return { body: res.body, ms: res.receivedAt - sentAt };
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
