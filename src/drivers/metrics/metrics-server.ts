import { createServer, type Server } from 'node:http';
import { chmod, lstat, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, isAbsolute } from 'node:path';
import { ErrorCodes, StowageError, messageOf } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { someoneListens } from '../server.js';
import type { StowageMetrics } from './metrics.js';

/** Where the metrics are served: a TCP address, or a unix socket. */
export type MetricsAddress = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

/**
 * `HOST:PORT` (`127.0.0.1:9468`, `[::1]:9468`, `0.0.0.0:9468`) or `unix:/absolute/path`.
 * Throws with the expected forms for anything else.
 */
export function parseMetricsAddress(value: string): MetricsAddress {
  if (value.startsWith('unix:')) {
    const path = value.slice('unix:'.length);
    if (!isAbsolute(path) || path.length > 100 || path.includes('\0')) throw new Error('expected unix:/absolute/path (at most 100 bytes)');
    return { kind: 'unix', path };
  }
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(value);
  const port = match ? Number(match[3]) : NaN;
  if (!match || !(port >= 1 && port <= 65_535)) throw new Error('expected HOST:PORT (e.g. 127.0.0.1:9468) or unix:/path');
  return { kind: 'tcp', host: match[1] ?? match[2]!, port };
}

export function formatMetricsAddress(address: MetricsAddress): string {
  if (address.kind === 'unix') return `unix:${address.path}`;
  return address.host.includes(':') ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

/**
 * Removes a stale socket left at `path` (a crash). A socket something still listens on is
 * refused: it is another program's (a mistyped path, the plugin's own socket), and removing it
 * would cut that program off for good. Anything else there is left alone (listen then fails).
 */
async function removeStaleSocket(path: string): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (!st?.isSocket()) return;
  if (await someoneListens(path)) {
    throw new StowageError(ErrorCodes.INVALID_OPTION, `--metrics unix:${path}: something already listens on that socket; choose another path`);
  }
  await rm(path, { force: true });
}

/** Only this machine can connect: a loopback address, or `localhost`. A name that resolves elsewhere is not. */
function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host) || /^::ffff:127\./i.test(host);
}

export interface MetricsServer {
  server: Server;
  close(): Promise<void>;
}

/**
 * The metrics on their own small HTTP server, apart from the plugin socket: GET /metrics. A
 * unix socket is made mode 0660 (root and its group), a stale one replaced.
 */
export async function serveMetrics(metrics: StowageMetrics, address: MetricsAddress, log: Logger): Promise<MetricsServer> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('stowage serves its metrics at /metrics\n');
      return;
    }
    metrics.text().then((text) => {
      res.writeHead(200, { 'content-type': metrics.contentType }).end(req.method === 'HEAD' ? undefined : text);
    }, (err: unknown) => {
      log.error(`metrics: scrape failed: ${messageOf(err)}`);
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`${messageOf(err)}\n`);
    });
  });
  // Scrapers keep connections open; they must not hold the daemon's exit.
  server.keepAliveTimeout = 5_000;
  if (address.kind === 'unix') await removeStaleSocket(address.path);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => {
      // Said in the flag's terms: `listen EACCES` alone names neither the flag nor the path.
      const missingDir = address.kind === 'unix' && !existsSync(dirname(address.path));
      reject(new StowageError(ErrorCodes.INVALID_OPTION, `--metrics ${formatMetricsAddress(address)} cannot be served: ` +
        (missingDir ? `the directory ${dirname((address as { path: string }).path)} does not exist` : messageOf(err)), { cause: err }));
    });
    if (address.kind === 'unix') server.listen(address.path, resolve);
    else server.listen(address.port, address.host, resolve);
  });
  // The inode this server made: at close only that one is removed, never a socket put there since.
  const ours = address.kind === 'unix' ? (await lstat(address.path)).ino : undefined;
  if (address.kind === 'unix') await chmod(address.path, 0o660);
  log.info(`metrics served on ${formatMetricsAddress(address)} at /metrics`);
  if (address.kind === 'tcp' && !isLoopback(address.host)) {
    log.warn(`metrics are served on ${formatMetricsAddress(address)} without authentication to anyone who can reach that address, ` +
      'and they name this node\'s volumes: firewall the port to the scraper, or serve them on 127.0.0.1 or a unix socket');
  }
  return {
    server,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (address.kind !== 'unix') return;
      const st = await lstat(address.path).catch(() => undefined);
      if (st?.isSocket() && st.ino === ours) await rm(address.path, { force: true });
    },
  };
}
