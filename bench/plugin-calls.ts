/**
 * Section 1c: which plugin calls the engine makes per engine API call. stowage restarts on a
 * socket of its own and a counting proxy takes its place at the path the engine dials, so every
 * request line the engine sends is counted. Not timed: the proxy adds a hop.
 */
import { mkdir, rm } from 'node:fs/promises';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { canConnect } from '../test/helpers/daemon-process.js';
import type { DockerNode } from '../test/helpers/docker-node.js';
import type { StowageInNode } from '../test/helpers/stowage-in-node.js';
import type { EngineClient } from './engine-api.js';
import { newSection, type Section } from './report.js';
import { sleep, volumeNames } from './util.js';

// Unanchored: a request line follows the previous request's body directly; JSON bodies hold no "HTTP/1.1\r\n".
const REQUEST_LINE = /\b(?:GET|POST|PUT|DELETE|HEAD) \/(\S+) HTTP\/1\.[01]\r\n/g;

/** Counts the request paths that pass through it, e.g. `VolumeDriver.Get`. */
class CountingProxy {
  readonly counts = new Map<string, number>();
  /** Connections the engine opened: whether it reuses them tells how much a new connection costs it. */
  connections = 0;
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();

  private constructor(private readonly upstream: string) {
    this.server = createServer((client) => this.relay(client));
  }

  static async start(listen: string, upstream: string): Promise<CountingProxy> {
    // The stopped daemon's socket file, if it left one, would make listen fail.
    await rm(listen, { force: true });
    const proxy = new CountingProxy(upstream);
    await new Promise<void>((resolve, reject) => {
      proxy.server.once('error', reject);
      proxy.server.listen(listen, () => resolve());
    });
    return proxy;
  }

  private relay(client: Socket): void {
    this.connections++;
    const up = connect(this.upstream);
    for (const s of [client, up]) {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
      s.on('error', () => { client.destroy(); up.destroy(); });
    }
    // A request line can straddle two chunks: keep the unmatched tail for the next one.
    let pending = '';
    client.on('data', (chunk: Buffer) => {
      pending += chunk.toString('latin1');
      let end = 0;
      for (const match of pending.matchAll(REQUEST_LINE)) {
        const path = match[1] as string;
        this.counts.set(path, (this.counts.get(path) ?? 0) + 1);
        end = (match.index ?? 0) + match[0].length;
      }
      pending = pending.slice(end).slice(-512);
    });
    client.pipe(up);
    up.pipe(client);
  }

  snapshot(): { counts: Map<string, number>; connections: number } {
    return { counts: new Map(this.counts), connections: this.connections };
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

function perCall(before: Map<string, number>, after: Map<string, number>, calls: number): string {
  const parts: string[] = [];
  for (const [path, count] of after) {
    const delta = count - (before.get(path) ?? 0);
    if (delta > 0) parts.push(`${path.replace(/^VolumeDriver\./, '')} ${Number((delta / calls).toFixed(2))}`);
  }
  return parts.length > 0 ? parts.join(', ') : 'none';
}

export async function countPluginCalls(
  node: DockerNode,
  api: EngineClient,
  volumes: number,
  startStowage: (socket: string) => Promise<StowageInNode>,
): Promise<Section> {
  const directDir = join(node.dir, 'direct');
  await mkdir(directDir, { recursive: true });
  // Same file name, so the daemon still calls itself "stowage" towards the engine.
  const direct = join(directDir, 'stowage.sock');
  const proxy = await CountingProxy.start(join(node.pluginsDir, 'stowage.sock'), direct);
  let stowage: StowageInNode | undefined;
  try {
    stowage = await startStowage(direct);
    for (let i = 0; !(await canConnect(direct)); i++) {
      if (i > 400) throw new Error(`stowage did not listen on ${direct}:\n${await stowage.log()}`);
      await sleep(50);
    }
    const rows: string[][] = [];
    let before = proxy.snapshot();
    const step = async (what: string, calls: number, fn: () => Promise<void>) => {
      await fn();
      const after = proxy.snapshot();
      rows.push([what, String(calls), perCall(before.counts, after.counts, calls),
        String(Number(((after.connections - before.connections) / calls).toFixed(2)))]);
      before = after;
    };
    const names = volumeNames('pc', volumes);
    // The engine's first call after the restart reconnects; count it apart from the per-call figures.
    await step('first list after the daemon restart', 1, () => api.listExpecting([], 'stowage'));
    await step('POST /volumes/create', volumes, async () => { for (const n of names) await api.create(n, 'stowage'); });
    await step('GET /volumes/NAME', volumes, async () => { for (const n of names) await api.inspect(n, 'stowage'); });
    await step('GET /volumes', 1, () => api.listExpecting(names, 'stowage'));
    const runs = names.slice(0, Math.min(3, volumes));
    await step('docker run --rm -v NAME:/data (CLI)', runs.length, async () => {
      for (const n of runs) await node.docker(['run', '--rm', '-v', `${n}:/data`, node.image, 'true'], { timeoutMs: 60_000 });
    });
    await step('DELETE /volumes/NAME', volumes, async () => { for (const n of names) await api.remove(n); });
    const section = newSection('plugin_calls', `1c. Plugin calls the engine makes per engine call (stowage driver, ${volumes} volumes; counted, not timed)`);
    section.tables.push({ header: ['engine call', 'calls', 'plugin calls per engine call', 'new connections per engine call'], rows });
    section.notes.push('counted by a proxy on the socket path the engine dials; the daemon listens behind it. ' +
      `The engine opened ${proxy.connections} connection(s) in all, counting the one of its activation after the restart.`);
    section.details = { volumes, rows, totals: Object.fromEntries(proxy.counts), connections: proxy.connections };
    return section;
  } finally {
    await stowage?.stop();
    await proxy.close();
    await rm(directDir, { recursive: true, force: true });
  }
}
