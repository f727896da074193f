/**
 * The real socket server (plugin dispatcher and control API) in the test process, with a
 * VolumeManager on the vfs backend in a temp directory: what the driver tests talk to.
 */
import type { RequestListener, Server } from 'node:http';
import { join } from 'node:path';
import type { Container, ContainerModule } from 'inversify';
import { afterAll, beforeAll } from 'vitest';
import { buildContainer } from '../../src/container.js';
import { silentLogger } from '../../src/core/logger.js';
import { TOKENS } from '../../src/core/tokens.js';
import type { VolumeManager } from '../../src/core/volume-manager.js';
import { closeServer, listenOnSocket } from '../../src/drivers/server.js';
import { SOCKET_MODULES } from '../../src/drivers/socket-module.js';
import { SHELL_TOKENS } from '../../src/drivers/tokens.js';
import { makeTempDir, removeTempDir } from './daemon-process.js';

export interface PluginServer {
  socket: string;
  /** The vfs store (`vfs.path`). */
  vols: string;
  manager: VolumeManager;
  /** What the server resolved its parts from, for a test that needs another (the BackupService). */
  container: Container;
  close(): Promise<void>;
}

/** Serves `<dir>/plugin.sock` for a vfs store in `<dir>/vols` and state in `<dir>/root`; `modules` add or override bindings. */
export async function startPluginServer(dir: string, backendOptions: Record<string, string> = {}, ...modules: ContainerModule[]): Promise<PluginServer> {
  const vols = join(dir, 'vols');
  const socket = join(dir, 'plugin.sock');
  const container = buildContainer({
    backend: 'vfs',
    backendOptions: { 'vfs.path': vols, ...backendOptions },
    root: join(dir, 'root'),
    nodeId: 'node-a',
    onRemove: 'delete',
    logger: silentLogger,
  }, ...SOCKET_MODULES, ...modules);
  const manager = container.get<VolumeManager>(TOKENS.VolumeManager);
  await manager.init();
  const server: Server = await listenOnSocket(container.get<RequestListener>(SHELL_TOKENS.RequestListener), socket);
  return {
    socket, vols, manager, container,
    close: async () => {
      await closeServer(server, socket);
      await manager.dispose();
    },
  };
}

/**
 * One server for the enclosing describe block: started in its beforeAll in a fresh temp dir,
 * closed and deleted in its afterAll. Read it through the getter, inside tests and hooks.
 */
export function pluginServerForSuite(prefix: string, backendOptions: Record<string, string> = {}, ...modules: ContainerModule[]): () => PluginServer & { dir: string } {
  let dir: string | undefined;
  let server: PluginServer | undefined;
  beforeAll(async () => {
    dir = await makeTempDir(prefix);
    server = await startPluginServer(dir, backendOptions, ...modules);
  });
  afterAll(async () => {
    await server?.close();
    await removeTempDir(dir);
  });
  return () => {
    if (!server || !dir) throw new Error('the plugin server starts in beforeAll; read it inside a test or hook');
    return { ...server, dir };
  };
}
