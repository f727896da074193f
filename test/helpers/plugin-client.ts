/**
 * A tiny HTTP client for stowage's unix socket. By default it sends bodies the way dockerd does:
 * a POST with a JSON body and NO Content-Type header, so the tests exercise the exact wire form
 * the plugin must accept.
 */
import { request, type Agent, type IncomingHttpHeaders } from 'node:http';
import { CONTROL_PREFIX } from '../../src/drivers/control/endpoints.js';

export interface SocketResponse {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  /** The parsed body, or undefined when it is not JSON. */
  json: unknown;
  /** performance.now() when the body's last byte had arrived, before it was decoded and parsed. */
  receivedAt: number;
  /** The body as received, when `rawBody` was asked for (text and json are then left empty). */
  body?: Buffer;
}

export interface SocketRequestOptions {
  method?: string;
  /** Content-Type to send; omitted (as Docker does) unless given. */
  contentType?: string;
  timeoutMs?: number;
  /** Connection reuse: a keep-alive Agent, or false for a fresh connection. @default the global agent */
  agent?: Agent | false;
  /** Keep the body's bytes and neither decode nor parse them (a benchmark checks them later). */
  rawBody?: boolean;
}

/** Sends `body` as is (a string or Buffer is sent verbatim, anything else as JSON). */
export function socketRequest(
  socket: string,
  path: string,
  body?: unknown,
  options: SocketRequestOptions = {},
): Promise<SocketResponse> {
  const payload = body === undefined ? Buffer.alloc(0)
    : Buffer.isBuffer(body) ? body
      : typeof body === 'string' ? Buffer.from(body, 'utf8')
        : Buffer.from(JSON.stringify(body), 'utf8');
  const headers: Record<string, string | number> = { 'content-length': payload.length };
  if (options.contentType !== undefined) headers['content-type'] = options.contentType;
  return new Promise<SocketResponse>((resolve, reject) => {
    let answered = false;
    const req = request({
      socketPath: socket,
      path,
      method: options.method ?? 'POST',
      headers,
      timeout: options.timeoutMs ?? 10_000,
      ...(options.agent === undefined ? {} : { agent: options.agent }),
    }, (res) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', reject);
      res.on('end', () => {
        const receivedAt = performance.now();
        if (options.rawBody) {
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text: '', json: undefined, receivedAt, body: Buffer.concat(chunks) });
          return;
        }
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try { json = JSON.parse(text); } catch { json = undefined; }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json, receivedAt });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${socket}${path} within the timeout`)));
    // A server may answer (e.g. "too large") and close before it read the whole body; the
    // answer is what matters then, not the write error that follows it.
    req.on('error', (err) => { if (!answered) reject(err); });
    req.end(payload);
  });
}

/** A Docker volume plugin reply: an object that may carry `Err`. */
export type PluginReply = Record<string, unknown> & { Err?: unknown };

/** POST /VolumeDriver.<method> (or /Plugin.Activate) as dockerd does; rejects if the reply is not a JSON object. */
export async function pluginCall(
  socket: string,
  method: string,
  body?: unknown,
  options: SocketRequestOptions = {},
): Promise<PluginReply & { httpStatus: number }> {
  const path = method.includes('.') ? `/${method}` : `/VolumeDriver.${method}`;
  const res = await socketRequest(socket, path, body, options);
  if (typeof res.json !== 'object' || res.json === null || Array.isArray(res.json)) {
    throw new Error(`${path} answered HTTP ${res.status} with a body that is not a JSON object: ${res.text.slice(0, 200)}`);
  }
  return { ...(res.json as PluginReply), httpStatus: res.status };
}

/** Names of the volumes the plugin lists, sorted. */
export async function listedNames(socket: string): Promise<string[]> {
  const reply = await pluginCall(socket, 'List', {});
  if (reply.Err) throw new Error(`List failed: ${String(reply.Err)}`);
  const volumes = reply.Volumes as Array<{ Name: string }>;
  return volumes.map((v) => v.Name).sort();
}

/**
 * POST /stowage/v1/<operation> on the control API (with the JSON content type the CLI uses), any
 * body: tests send what the CLI's typed client would refuse to.
 */
export async function controlCall(
  socket: string,
  operation: string,
  body: unknown = {},
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await socketRequest(socket, `${CONTROL_PREFIX}/${operation}`, body, { contentType: 'application/json' });
  if (typeof res.json !== 'object' || res.json === null) {
    throw new Error(`control ${operation} answered HTTP ${res.status} with a non-JSON body: ${res.text.slice(0, 200)}`);
  }
  return { status: res.status, json: res.json as Record<string, unknown> };
}
