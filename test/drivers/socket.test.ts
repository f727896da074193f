/**
 * The unix socket both protocols share: its mode, a stale socket left by a crash, a live
 * daemon's socket and a file that is not a socket.
 */
import { stat, writeFile } from 'node:fs/promises';
import type { RequestListener } from 'node:http';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildContainer } from '../../src/container.js';
import { silentLogger } from '../../src/core/logger.js';
import { TOKENS } from '../../src/core/tokens.js';
import type { VolumeManager } from '../../src/core/volume-manager.js';
import { closeServer, listenOnSocket } from '../../src/drivers/server.js';
import { SOCKET_MODULES } from '../../src/drivers/socket-module.js';
import { SHELL_TOKENS } from '../../src/drivers/tokens.js';
import { canConnect, makeTempDir, removeTempDir } from '../helpers/daemon-process.js';
import { pluginCall } from '../helpers/plugin-client.js';

describe('listenOnSocket', () => {
  let dir: string;
  const cleanups: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    dir = await makeTempDir('stowage-sock-');
  });

  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    await removeTempDir(dir);
  });

  /** The daemon's request listener over a started manager with its state in `<dir>/<sub>`. */
  async function appIn(sub: string): Promise<RequestListener> {
    const container = buildContainer({
      backend: 'vfs', backendOptions: {}, root: join(dir, sub), nodeId: 'node-s', onRemove: 'delete', logger: silentLogger,
    }, ...SOCKET_MODULES);
    const manager = container.get<VolumeManager>(TOKENS.VolumeManager);
    await manager.init();
    cleanups.push(() => manager.dispose());
    return container.get<RequestListener>(SHELL_TOKENS.RequestListener);
  }

  it('creates the socket file with mode 0600', async () => {
    const socket = join(dir, 'mode.sock');
    const app = await appIn('mode');
    const server = await listenOnSocket(app, socket);
    cleanups.push(() => closeServer(server, socket));
    const info = await stat(socket);
    expect(info.isSocket()).toBe(true);
    expect(info.mode & 0o777).toBe(0o600);
  });

  it('refuses a second listener on a live socket, and the first keeps answering', async () => {
    const socket = join(dir, 'live.sock');
    const app = await appIn('live');
    const first = await listenOnSocket(app, socket);
    cleanups.push(() => closeServer(first, socket));
    await expect(listenOnSocket(app, socket)).rejects.toThrow(/already listening/);
    const reply = await pluginCall(socket, 'Plugin.Activate');
    expect(reply.Implements).toEqual(['VolumeDriver']);
  });

  it('replaces a stale socket file left by a process that died', async () => {
    const socket = join(dir, 'stale.sock');
    // A listener that is SIGKILLed leaves its socket file behind, as after a crash.
    const child = execa('node', ['-e',
      `require('net').createServer().listen(${JSON.stringify(socket)}, () => console.log('up'))`], { reject: false });
    await new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));
    child.kill('SIGKILL');
    await child;
    expect((await stat(socket)).isSocket()).toBe(true);
    expect(await canConnect(socket)).toBe(false);

    const app = await appIn('stale');
    const server = await listenOnSocket(app, socket);
    cleanups.push(() => closeServer(server, socket));
    const reply = await pluginCall(socket, 'Plugin.Activate');
    expect(reply.Implements).toEqual(['VolumeDriver']);
    expect((await stat(socket)).mode & 0o777).toBe(0o600);
  });

  it('refuses a path that holds a regular file and leaves the file alone', async () => {
    const path = join(dir, 'not-a-socket');
    await writeFile(path, 'important');
    const app = await appIn('file');
    await expect(listenOnSocket(app, path)).rejects.toThrow(/not a socket/);
    expect((await stat(path)).isFile()).toBe(true);
  });

  it('removes the socket file on close', async () => {
    const socket = join(dir, 'closing.sock');
    const app = await appIn('closing');
    const server = await listenOnSocket(app, socket);
    await closeServer(server, socket);
    await expect(stat(socket)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
