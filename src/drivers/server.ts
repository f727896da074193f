import { createConnection } from 'node:net';
import * as fsp from 'node:fs/promises';
import { createServer, type RequestListener, type Server } from 'node:http';
import { dirname } from 'node:path';
import type { Router } from 'express';
import { ErrorCodes, StowageError, errnoCode } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { controlErrorBody } from './control/endpoints.js';
import { failureOf } from './http-status.js';
import { servePluginRequest, type PluginHandlers } from './docker-plugin/routes.js';
import { checkInheritedPath, describeInheritedSocket, takeListenFds } from './socket-activation.js';
import { importLazily } from '../core/lazy-import.js';

export const DEFAULT_SOCKET = '/run/docker/plugins/stowage.sock';

/**
 * One listener for both protocols on the socket: Docker's plugin calls go to a small dispatcher,
 * everything else (the control API under /stowage/v1, unknown paths) to express. Express, its
 * body parsers (with iconv-lite and mime-db) and the control routes are loaded on the first such
 * request, not at start: evaluating them was a tenth of the daemon's start-up, and Docker, which
 * activates the plugin at start, never needs them.
 */
export function createApp(plugin: PluginHandlers, loadControl: () => Promise<Router>, driverName = 'stowage'): RequestListener {
  let control: Promise<RequestListener> | undefined;
  return (req, res) => {
    const handler = req.method === 'POST' ? pluginHandlerOf(plugin, req.url ?? '') : undefined;
    if (handler) {
      void servePluginRequest(handler, req, res, driverName);
      return;
    }
    control ??= Promise.all([importLazily(() => import('./control-app.js'), 'the control API'), loadControl()]).then(([{ controlApp }, router]) => controlApp(router));
    control.then((app) => app(req, res), (err: unknown) => {
      control = undefined;
      const failure = failureOf(err);
      const body = JSON.stringify(controlErrorBody(failure));
      res.writeHead(failure.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
    });
  };
}

/** The plugin call a path names, whatever query string follows it (Docker sends none; curl users may). */
function pluginHandlerOf(plugin: PluginHandlers, url: string): ReturnType<PluginHandlers['get']> {
  const query = url.indexOf('?');
  return plugin.get(query < 0 ? url : url.slice(0, query));
}

/** Whether something accepts connections on the unix socket at `socket` now. */
export async function someoneListens(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createConnection(socket);
    probe.once('connect', () => { probe.destroy(); resolve(true); });
    probe.once('error', () => resolve(false));
  });
}

/** Clears a stale socket left by a crash, but never a live daemon's socket or a non-socket file. */
async function prepareSocketPath(socket: string): Promise<void> {
  await fsp.mkdir(dirname(socket), { recursive: true });
  const stat = await fsp.lstat(socket).catch((err: unknown) => {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  });
  if (!stat) return;
  if (!stat.isSocket()) {
    throw new StowageError(ErrorCodes.INVALID_OPTION, `${socket} exists and is not a socket; choose another --socket`);
  }
  if (await someoneListens(socket)) {
    throw new StowageError(ErrorCodes.INVALID_OPTION, `another daemon is already listening on ${socket}`);
  }
  await fsp.unlink(socket);
}

export interface ListenOptions {
  /** Where LISTEN_PID and LISTEN_FDS are read from (and removed). @default process.env */
  env?: NodeJS.ProcessEnv;
  /** Told which socket is served, and when its path could not be checked. */
  log?: Logger;
}

/** Servers listening on a socket systemd bound: systemd owns the file, so closing keeps it. */
const inheritedServers = new WeakSet<Server>();

/** A socket this daemon may serve, checked before the daemon does anything else. */
export interface SocketClaim {
  /** True when systemd bound the socket and passed it. */
  readonly inherited: boolean;
  listen(app: RequestListener): Promise<Server>;
}

/**
 * Claims `socket` without serving it yet: the descriptor systemd passed when this process was
 * socket-activated, else the path itself, refused when another daemon listens there. Claiming
 * before the volume manager starts keeps a second daemon from touching the state at all.
 */
export async function claimSocket(socket: string, options: ListenOptions = {}): Promise<SocketClaim> {
  const log = options.log;
  const passed = takeListenFds(options.env ?? process.env, process.pid);
  if (!passed) {
    await prepareSocketPath(socket);
    return { inherited: false, listen: (app) => listenOnOwnSocket(app, socket) };
  }
  const inherited = await describeInheritedSocket(passed.fd, passed.count);
  checkInheritedPath(inherited, socket);
  if (inherited.path === undefined) {
    log?.warn(`the socket systemd passed as fd ${inherited.fd} has no path the kernel reports; serving it as ${socket}`);
  }
  if (inherited.count > 1) {
    log?.warn(`systemd passed ${inherited.count} sockets; only the first (fd ${inherited.fd}) is served`);
  }
  return {
    inherited: true,
    listen: async (app) => {
      const server = await listen(createServer(app), { fd: inherited.fd });
      inheritedServers.add(server);
      log?.info(`serving the socket systemd passed (fd ${inherited.fd}, ${inherited.path ?? socket})`);
      return keepAlive(server);
    },
  };
}

export async function listenOnSocket(app: RequestListener, socket: string, options: ListenOptions = {}): Promise<Server> {
  return (await claimSocket(socket, options)).listen(app);
}

async function listenOnOwnSocket(app: RequestListener, socket: string): Promise<Server> {
  // The socket grants full control over volumes: only its owner (root, as dockerd) may use it,
  // from the moment it exists, hence the umask around bind rather than a chmod afterwards.
  const previousUmask = process.umask(0o177);
  let server: Server;
  try {
    server = await listen(createServer(app), socket);
  } finally {
    process.umask(previousUmask);
  }
  await fsp.chmod(socket, 0o600);
  return keepAlive(server);
}

function keepAlive(server: Server): Server {
  server.keepAliveTimeout = 60_000;
  return server;
}

function listen(server: Server, where: string | { fd: number }): Promise<Server> {
  return new Promise<Server>((resolve, reject) => {
    server.once('error', reject);
    server.listen(where, () => resolve(server));
  });
}

/** Stops serving; removes the socket file only if this process made it (systemd's stays for the next start). */
export async function closeServer(server: Server, socket: string): Promise<void> {
  await new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
  if (!inheritedServers.has(server)) await fsp.unlink(socket).catch(() => undefined);
}
