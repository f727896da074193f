/**
 * The real socket server (plugin dispatcher and control API) in the test process, with a
 * VolumeManager on the vfs backend in a temp directory: what the driver tests talk to.
 */
import type { Server } from 'node:http';
import { join } from 'node:path';
import { buildContainer } from '../../src/container.js';
import { silentLogger } from '../../src/core/logger.js';
import { TOKENS } from '../../src/core/tokens.js';
import type { VolumeManager } from '../../src/core/volume-manager.js';
import { closeServer, createApp, listenOnSocket } from '../../src/drivers/server.js';

export interface PluginServer {
  socket: string;
  /** The vfs store (`vfs.path`). */
  vols: string;
  manager: VolumeManager;
  close(): Promise<void>;
}

/** Serves `<dir>/plugin.sock` for a vfs store in `<dir>/vols` and state in `<dir>/root`. */
export async function startPluginServer(dir: string, backendOptions: Record<string, string> = {}): Promise<PluginServer> {
  const vols = join(dir, 'vols');
  const socket = join(dir, 'plugin.sock');
  const container = buildContainer({
    backend: 'vfs',
    backendOptions: { 'vfs.path': vols, ...backendOptions },
    root: join(dir, 'root'),
    nodeId: 'node-a',
    onRemove: 'delete',
    logger: silentLogger,
  });
  const manager = container.get<VolumeManager>(TOKENS.VolumeManager);
  await manager.init();
  const server: Server = await listenOnSocket(createApp(manager), socket);
  return {
    socket, vols, manager,
    close: async () => {
      await closeServer(server, socket);
      await manager.dispose();
    },
  };
}
