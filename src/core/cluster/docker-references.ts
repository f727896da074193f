import { request, type IncomingMessage } from 'node:http';
import type { Logger } from '../logger.js';
import type { ContainerRef } from './node-record.js';

interface EngineContainer {
  Id: string;
  Names?: string[];
  State?: string;
  Mounts?: Array<{ Type?: string; Name?: string; Driver?: string }>;
}

export interface ContainerScan {
  reachable: boolean;
  error?: string;
  byVolume: Record<string, ContainerRef[]>;
}

/** Parses `unix:///path.sock` (the only form a volume plugin's host engine is reached by). */
export function dockerSocketPath(dockerHost: string): string {
  const match = /^unix:\/\/(\/.+)$/.exec(dockerHost);
  if (!match) throw new Error(`--docker-host ${JSON.stringify(dockerHost)}: expected unix:///path/to/docker.sock`);
  return match[1]!;
}

/**
 * Which containers on this node reference volumes of our driver, from the local Docker engine
 * API: a full scan on demand, and a watch on the event stream so changes are seen in seconds.
 */
export class DockerReferences {
  private events?: IncomingMessage;
  private stopped = false;

  constructor(private readonly socket: string, private readonly driver: string, private readonly log: Logger) {}

  async scan(): Promise<ContainerScan> {
    try {
      const containers = await this.getJson<EngineContainer[]>('/containers/json?all=1');
      const byVolume: Record<string, ContainerRef[]> = {};
      for (const c of containers) {
        for (const m of c.Mounts ?? []) {
          if (m.Type !== 'volume' || m.Driver !== this.driver || !m.Name) continue;
          (byVolume[m.Name] ??= []).push({
            id: c.Id, name: (c.Names?.[0] ?? c.Id).replace(/^\//, ''), state: c.State ?? 'unknown',
          });
        }
      }
      return { reachable: true, byVolume };
    } catch (err) {
      return { reachable: false, error: (err as Error).message, byVolume: {} };
    }
  }

  /** Calls `onChange` after container events; reconnects with a delay while not stopped. */
  watch(onChange: () => void): void {
    if (this.stopped) return;
    const filters = encodeURIComponent(JSON.stringify({ type: ['container'] }));
    const req = request({ socketPath: this.socket, path: `/events?filters=${filters}`, method: 'GET' }, (res) => {
      this.events = res;
      res.on('data', () => onChange());
      res.on('end', () => this.rewatch(onChange));
      res.on('error', () => this.rewatch(onChange));
    });
    req.on('error', () => this.rewatch(onChange));
    req.end();
  }

  private rewatch(onChange: () => void): void {
    this.events = undefined;
    if (!this.stopped) setTimeout(() => this.watch(onChange), 2_000).unref();
  }

  stop(): void {
    this.stopped = true;
    this.events?.destroy();
  }

  private getJson<T>(path: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const req = request({ socketPath: this.socket, path, method: 'GET', timeout: 5_000 }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          if (res.statusCode !== 200) {
            reject(new Error(`Docker engine answered HTTP ${res.statusCode} for ${path}`));
            return;
          }
          try { resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as T); } catch (err) { reject(err); }
        });
      });
      req.on('timeout', () => req.destroy(new Error(`Docker engine at ${this.socket} did not answer within 5 s`)));
      req.on('error', (err) => reject(new Error(`cannot reach the Docker engine at ${this.socket}: ${err.message}`)));
      req.end();
    });
  }
}
