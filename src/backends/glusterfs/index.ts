import { join } from 'node:path';
import { distrust } from '../../core/local-fs.js';
import { backendModule } from '../backend-module.js';
import type { BackendContext } from '../context.js';
import { GlusterCli } from './gluster-cli.js';
import { GlusterMounter } from './gluster-mount.js';
import { layout, parseGlusterfsOptions } from './glusterfs-options.js';
import { PoolMount } from './pool-mount.js';
import { GlusterSubdirBackend } from './subdir-backend.js';
import { GlusterVolumeBackend } from './volume-backend.js';

export { parseGlusterfsOptions, type GlusterfsOptions } from './glusterfs-options.js';
export { GlusterSubdirBackend } from './subdir-backend.js';
export { GlusterVolumeBackend } from './volume-backend.js';

/** The `glusterfs` backend: `subdir` (default) or `volume` mode, chosen by `glusterfs.mode`. */
export function createGlusterfsBackend(ctx: BackendContext, raw: Record<string, string>): GlusterSubdirBackend | GlusterVolumeBackend {
  const options = parseGlusterfsOptions(raw);
  const places = layout(ctx.root);
  // The pool's and volumes' FUSE mounts live under the daemon's root, which is usually local:
  // calls there must go through the thread pool, and directory times there are the servers'.
  distrust(ctx.fs, places.mounts);
  const cli = new GlusterCli(ctx.runner, {
    socket: options.glusterdSocket, logFile: join(places.logs, 'cli.log'), timeoutMs: options.timeoutMs,
    servers: options.servers, nodeId: ctx.nodeId,
  }, ctx.log);
  const mounter = new GlusterMounter(ctx.runner, ctx.fs, {
    servers: options.servers, mountOptions: options.mountOptions, timeoutMs: options.timeoutMs, logDir: places.logs, nodeId: ctx.nodeId,
  }, ctx.log);
  const pool = new PoolMount(cli, mounter, options.pool, places.mounts, ctx.nodeId, options.servers);
  return options.mode === 'subdir'
    ? new GlusterSubdirBackend(ctx, options, cli, pool)
    : new GlusterVolumeBackend(ctx, options, cli, mounter, places.mounts, pool);
}

export const glusterfsModule = backendModule('glusterfs', createGlusterfsBackend);
