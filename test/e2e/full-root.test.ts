/**
 * --root on a full filesystem (a 1 MiB tmpfs filled up), the volumes elsewhere: a remove that
 * removed the volume says so, and failures name their cause (ENOSPC).
 */
import { mkdir, open, rm } from 'node:fs/promises';
import type { RequestListener, Server } from 'node:http';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildContainer } from '../../src/container.js';
import { TOKENS } from '../../src/core/tokens.js';
import type { VolumeManager } from '../../src/core/volume-manager.js';
import { closeServer, listenOnSocket } from '../../src/drivers/server.js';
import { SOCKET_MODULES } from '../../src/drivers/socket-module.js';
import { SHELL_TOKENS } from '../../src/drivers/tokens.js';
import { makeTempDir, removeTempDir } from '../helpers/daemon-process.js';
import { memoryLogger } from '../helpers/memory-logger.js';
import { socketRequest } from '../helpers/plugin-client.js';
import { findExecutable, systemSuite } from '../helpers/requirements.js';

const skip = systemSuite('tmpfs mounts', process.getuid?.() === 0 && findExecutable('mount')
  ? { ok: true } : { ok: false, why: 'needs root to mount a small tmpfs' });

/** Writes until the filesystem says ENOSPC. */
async function fill(path: string): Promise<void> {
  const handle = await open(path, 'w');
  try {
    const chunk = Buffer.alloc(64 * 1024, 1);
    for (;;) await handle.write(chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    await handle.close();
  }
}

describe.skipIf(skip)('a full --root', { timeout: 60_000 }, () => {
  let dir: string;
  let root: string;
  let socket: string;
  let server: Server;
  let manager: VolumeManager;
  const log = memoryLogger();
  const call = async (method: string, body: object) => {
    const res = await socketRequest(socket, `/VolumeDriver.${method}`, body);
    return { status: res.status, json: res.json as Record<string, unknown> };
  };

  beforeAll(async () => {
    dir = await makeTempDir('stowage-full-');
    root = join(dir, 'root');
    await mkdir(root);
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=1M', 'tmpfs', root]);
    await mkdir(join(dir, 'vols'));
    const container = buildContainer({
      backend: 'vfs', backendOptions: { 'vfs.path': join(dir, 'vols') }, root, nodeId: 'full-node',
      onRemove: 'delete', logger: log, engine: { socket: undefined },
    }, ...SOCKET_MODULES);
    manager = container.get<VolumeManager>(TOKENS.VolumeManager);
    await manager.init();
    socket = join(dir, 'p.sock');
    server = await listenOnSocket(container.get<RequestListener>(SHELL_TOKENS.RequestListener), socket);
  });
  afterAll(async () => {
    if (server) await closeServer(server, socket);
    await manager?.dispose();
    await execa('umount', [root], { reject: false });
    await removeTempDir(dir);
  });

  it('reports a remove that removed the volume as done, and says ENOSPC where it fails', async () => {
    expect((await call('Create', { Name: 'gone', Opts: {} })).json).toEqual({});
    expect((await call('Create', { Name: 'keep', Opts: {} })).json).toEqual({});
    expect((await call('Mount', { Name: 'gone', ID: 'm1' })).json.Mountpoint).toEqual(expect.any(String));
    await fill(join(root, 'filler'));

    // A mount record is one line appended to mounts.log, which may still fit in the file's last
    // page of the full filesystem: mount and unmount until a save finds no room.
    let refused: { status: number; json: Record<string, unknown> } | undefined;
    for (let i = 0; i < 200 && !refused; i++) {
      const mounted = await call('Mount', { Name: 'keep', ID: `f${i}` });
      if (mounted.status !== 200) refused = mounted;
      else expect((await call('Unmount', { Name: 'keep', ID: `f${i}` })).json).toEqual({});
    }
    expect(refused?.status).toBe(500);
    expect(refused?.json.Err).toMatch(/mounting volume keep failed: cannot save mount records to .*: no space left on device \(ENOSPC\)/);
    // The failed mount was undone: only gone's mount is counted.
    expect(manager.mountRecords().map((r) => `${r.volume}/${r.id}`)).toEqual(['gone/m1']);

    // The unmount is done; only its record could not be saved (logged).
    expect((await call('Unmount', { Name: 'gone', ID: 'm1' })).json).toEqual({});
    expect(log.lines.join('\n')).toMatch(/unmount of gone: cannot save mount records .*no space left on device \(ENOSPC\)/);

    const removed = await call('Remove', { Name: 'gone' });
    expect(removed).toEqual({ status: 200, json: {} });
    expect((await call('Get', { Name: 'gone' })).json.Err).toMatch(/does not exist/);
    expect(log.lines.join('\n')).toMatch(/volume gone was removed, but cannot save mount records/);
    expect(manager.mountRecords()).toEqual([]);

    await rm(join(root, 'filler'));
    expect((await call('Mount', { Name: 'keep', ID: 'm3' })).json.Mountpoint).toEqual(expect.any(String));
    expect((await call('Unmount', { Name: 'keep', ID: 'm3' })).json).toEqual({});
  });
});
