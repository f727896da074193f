import { join } from 'node:path';
import { ErrorCodes, StowageError, errnoCode } from '../../core/errors.js';
import type { GlusterCli } from './gluster-cli.js';
import type { GlusterMounter } from './gluster-mount.js';
import type { GlusterVolume } from './parsers.js';

/** The system error (errno code) an error wraps, or the error itself. */
export function causeOf(err: unknown): unknown {
  let at = err;
  for (let depth = 0; depth < 5 && typeof at === 'object' && at !== null; depth++) {
    if (errnoCode(at) !== undefined && /^E[A-Z]+$/.test(errnoCode(at)!)) return at;
    at = (at as { cause?: unknown }).cause;
  }
  return err;
}

/** An error of a call through a FUSE mount whose client died (the kernel aborts the connection). */
function diedUnder(err: unknown): boolean {
  const code = errnoCode(causeOf(err));
  return code === 'ENOTCONN' || code === 'ECONNABORTED';
}

/**
 * The one gluster volume every node mounts under its `--root`: in subdir mode it holds the
 * volumes, their registry and the cluster state; in volume mode only the cluster state (node
 * records, references, name locks) that the core keeps on storage all nodes share.
 */
export class PoolMount {
  readonly mountpoint: string;

  constructor(
    private readonly cli: GlusterCli,
    private readonly mounter: GlusterMounter,
    readonly pool: string,
    mountRoot: string,
    private readonly nodeId: string,
    private readonly servers: readonly string[],
  ) {
    this.mountpoint = join(mountRoot, pool);
  }

  /** Checks with glusterd that the pool exists and is started, then mounts it; returns what glusterd said of it. */
  async init(): Promise<GlusterVolume> {
    const info = await this.cli.volumeInfo(this.pool);
    if (!info) {
      throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE,
        `the pool volume ${this.pool} does not exist on ${this.servers.join(', ')}; create and start it ` +
        `(gluster volume create ${this.pool} replica 3 HOST1:/BRICK HOST2:/BRICK HOST3:/BRICK; gluster volume start ${this.pool}) ` +
        'or fix glusterfs.pool');
    }
    if (!info.started) {
      throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE,
        `the pool volume ${this.pool} is ${info.status.toLowerCase()}, not started; start it: gluster volume start ${this.pool}`);
    }
    await this.ensure();
    return info;
  }

  /** Whether the pool's mount is there and answers, without remounting it. */
  async live(): Promise<boolean> {
    return (await this.mounter.health(this.pool, this.mountpoint).catch(() => ({ state: 'dead' }))).state === 'live';
  }

  /** A live mount of the pool, remounted if it died; `volume` names the stowage volume in errors. */
  async ensure(volume?: string): Promise<void> {
    try {
      await this.mounter.ensure({ volume: this.pool, target: this.mountpoint, forVolume: volume });
    } catch (err) {
      // The commonest cause has a precise answer; ask glusterd (bounded) rather than guess from the client log.
      const info = await this.cli.volumeInfo(this.pool).catch(() => undefined);
      if (info && !info.started) {
        throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE,
          `the pool volume ${this.pool} is ${info.status.toLowerCase()}, not started, so volume ${volume ?? '(any)'} cannot be ` +
          `reached on node ${this.nodeId}; start it: gluster volume start ${this.pool}`, { volume, node: this.nodeId, cause: err });
      }
      throw err;
    }
  }

  /**
   * Runs a read of files in the pool. It must never run against the bare mount point: an
   * unmounted pool looks like a store without volumes, and a Get answering "no such volume"
   * makes Docker forget it. So check the mount (cheaply, /proc only) first, and heal once when
   * the read hits a dead mount. `volume` names the stowage volume in errors.
   */
  async read<T>(fn: () => Promise<T>, volume?: string): Promise<T> {
    if (!(await this.mounter.isMounted(this.pool, this.mountpoint))) await this.ensure(volume);
    try {
      return await fn();
    } catch (err) {
      // Live now yet the read met a dead client: another caller's remount finished in between; read again.
      if ((await this.mounter.health(this.pool, this.mountpoint)).state === 'live' && !diedUnder(err)) throw err;
      await this.ensure(volume);
      return fn();
    }
  }
}
