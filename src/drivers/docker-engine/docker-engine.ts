import { request, type IncomingMessage } from 'node:http';
import { z } from 'zod';
import type { ContainerReferences, ContainerRef, ContainerScan } from '../../core/container-references.js';
import type { Logger } from '../../core/logger.js';
import { isValidVolumeName } from '../../core/names.js';
import { parseRecord } from '../../core/schema/parse-record.js';
import { messageOf } from '../../core/errors.js';

// The engine is trusted more than shared storage, but its answer still only names volumes
// after passing the same checks as any other input.
const containersSchema = z.array(z.object({
  Id: z.string(),
  Names: z.array(z.string()).optional(),
  State: z.string().optional(),
  Mounts: z.array(z.object({
    Type: z.string().optional(),
    Name: z.string().optional(),
    Driver: z.string().optional(),
  }).loose()).nullish(),
}).loose());

/** Parses `unix:///path.sock` (the only form a volume plugin's host engine is reached by). */
export function dockerSocketPath(dockerHost: string): string {
  const match = /^unix:\/\/(\/.+)$/.exec(dockerHost);
  if (!match) throw new Error(`--docker-host ${JSON.stringify(dockerHost)}: expected unix:///path/to/docker.sock`);
  return match[1]!;
}

/**
 * The local Docker engine's API (`/containers/json`, `/events`, `/volumes`): the core's
 * ContainerReferences port, and plugin activation for the daemon. One event stream,
 * reconnected while the engine is down; `onConnect` listeners run on every (re)connect, which
 * is how an engine restart is noticed.
 */
export class DockerEngine implements ContainerReferences {
  private events?: IncomingMessage;
  private watching = false;
  private stopped = false;
  private retry?: NodeJS.Timeout;
  /** Bumped by every container event and every connection or loss of the event stream. */
  private changes = 0;
  /** Until then a new stream's marks are not given out (see changeMark). */
  private marksFrom = 0;
  private readonly eventListeners: Array<() => void> = [];
  private readonly connectListeners: Array<() => void> = [];

  constructor(
    /** Undefined when no engine is configured: every call then reports it unreachable. */
    readonly socket: string | undefined,
    private readonly driver: string,
    private readonly log: Logger,
    private readonly reconnectMs = 2_000,
    /** How long after connecting a stream gives no marks (see changeMark). */
    private readonly markSettleMs = 1_000,
  ) {}

  get configured(): boolean {
    return this.socket !== undefined;
  }

  async scan(): Promise<ContainerScan> {
    if (!this.socket) return { reachable: false, error: 'no --docker-host', byVolume: {} };
    try {
      const containers = parseRecord(containersSchema, await this.getJson('/containers/json?all=1'),
        'the Docker engine\'s container list');
      const byVolume: Record<string, ContainerRef[]> = {};
      for (const c of containers) {
        for (const m of c.Mounts ?? []) {
          if (m.Type !== 'volume' || m.Driver !== this.driver || !isValidVolumeName(m.Name)) continue;
          (byVolume[m.Name] ??= []).push({
            id: c.Id, name: (c.Names?.[0] ?? c.Id).replace(/^\//, ''), state: c.State ?? 'unknown',
          });
        }
      }
      return { reachable: true, byVolume };
    } catch (err) {
      return { reachable: false, error: messageOf(err), byVolume: {} };
    }
  }

  /**
   * Makes the engine activate every legacy plugin it can find, ours included: listing all
   * volumes asks every volume driver. Until a legacy plugin is activated the engine does not
   * report it to Swarm, whose scheduler then finds "no suitable node" for our volumes.
   */
  async activatePlugins(): Promise<void> {
    if (!this.socket) return;
    await this.getJson('/volumes', 60_000);
  }

  /**
   * The engine answers an events request with its headers before it subscribes the stream, so
   * for a moment after connecting a change can go unreported: a new stream gives marks only
   * once that moment is long past.
   */
  changeMark(): number | undefined {
    return this.events && performance.now() >= this.marksFrom ? this.changes : undefined;
  }

  onEvent(listener: () => void): void {
    this.eventListeners.push(listener);
    this.watch();
  }

  onConnect(listener: () => void): void {
    this.connectListeners.push(listener);
    this.watch();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retry);
    this.events?.destroy();
  }

  private watch(): void {
    if (this.watching || this.stopped || !this.socket) return;
    this.watching = true;
    this.connect();
  }

  private connect(): void {
    if (this.stopped || !this.socket) return;
    const filters = encodeURIComponent(JSON.stringify({ type: ['container'] }));
    const req = request({ socketPath: this.socket, path: `/events?filters=${filters}`, method: 'GET' }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        this.reconnect();
        return;
      }
      this.changes++;
      this.marksFrom = performance.now() + this.markSettleMs;
      this.events = res;
      for (const listener of this.connectListeners) listener();
      res.on('data', () => {
        this.changes++;
        for (const listener of this.eventListeners) listener();
      });
      res.on('end', () => this.reconnect());
      res.on('error', () => this.reconnect());
    });
    req.on('error', () => this.reconnect());
    req.end();
  }

  private reconnect(): void {
    if (this.events) this.log.info(`lost the Docker engine's event stream at ${this.socket}; reconnecting`);
    this.changes++;
    this.events = undefined;
    clearTimeout(this.retry);
    if (!this.stopped) {
      this.retry = setTimeout(() => this.connect(), this.reconnectMs);
      this.retry.unref();
    }
  }

  pause(id: string): Promise<void> {
    return this.post(`/containers/${encodeURIComponent(id)}/pause`);
  }

  unpause(id: string): Promise<void> {
    return this.post(`/containers/${encodeURIComponent(id)}/unpause`);
  }

  /** A POST without a body that the engine answers 204 (No Content) on success. */
  private post(path: string, timeoutMs = 30_000): Promise<void> {
    const socket = this.socket;
    if (!socket) return Promise.reject(new Error('no Docker engine is configured (--docker-host)'));
    return new Promise<void>((resolve, reject) => {
      const req = request({ socketPath: socket, path, method: 'POST', timeout: timeoutMs }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          if (res.statusCode === 204 || res.statusCode === 200) resolve();
          else reject(new Error(`Docker engine answered HTTP ${res.statusCode} for POST ${path}: ${Buffer.concat(chunks).toString('utf8').slice(0, 300).trim()}`));
        });
      });
      req.on('timeout', () => req.destroy(new Error(`Docker engine at ${socket} did not answer within ${timeoutMs / 1000} s`)));
      req.on('error', (err) => reject(new Error(`cannot reach the Docker engine at ${socket}: ${err.message}`)));
      req.end();
    });
  }

  getJson(path: string, timeoutMs = 5_000): Promise<unknown> {
    const socket = this.socket;
    if (!socket) return Promise.reject(new Error('no Docker engine is configured (--docker-host)'));
    return new Promise<unknown>((resolve, reject) => {
      const req = request({ socketPath: socket, path, method: 'GET', timeout: timeoutMs }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          if (res.statusCode !== 200) {
            reject(new Error(`Docker engine answered HTTP ${res.statusCode} for ${path}`));
            return;
          }
          try { resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown); } catch (err) { reject(err); }
        });
      });
      req.on('timeout', () => req.destroy(new Error(`Docker engine at ${socket} did not answer within ${timeoutMs / 1000} s`)));
      req.on('error', (err) => reject(new Error(`cannot reach the Docker engine at ${socket}: ${err.message}`)));
      req.end();
    });
  }
}
