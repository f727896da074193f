import { hostname } from 'node:os';
import { isAbsolute, join, normalize } from 'node:path';
import { invalidOption as invalid, optionMap, parseBoolOption } from '../../core/schema/option-map.js';

export type GlusterMode = 'subdir' | 'volume';

export interface BrickRoot {
  host: string;
  /** Absolute directory on `host` under which stowage places one brick directory per volume. */
  path: string;
}

/** Daemon options of the glusterfs backend (`--opt glusterfs.KEY=VALUE`). */
export interface GlusterfsOptions {
  /**
   * Gluster servers to fetch volume definitions from; the first is the mount source, the rest
   * become `backup-volfile-servers`. (`glusterfs.servers`, comma-separated, as in Convoy.)
   * @default this machine's host name
   */
  servers: string[];
  /**
   * `subdir`: stowage volumes are directories of one pool volume. `volume`: each stowage volume
   * is its own gluster volume. (`glusterfs.mode`)
   * @default 'subdir'
   */
  mode: GlusterMode;
  /**
   * The existing gluster volume every node mounts (required). subdir mode: it holds the stowage
   * volumes, their registry and the cluster state. volume mode: only the cluster state (node
   * records, references, name locks), so a small replicated volume will do.
   * (`glusterfs.pool`; aliases `glusterfs.volume` and Convoy's `glusterfs.defaultvolumepool`)
   */
  pool: string;
  /** Brick roots `host:/path`, in volume mode (required there). (`glusterfs.bricks`, comma-separated) */
  brickRoots: BrickRoot[];
  /** Replica count of new gluster volumes in volume mode. (`glusterfs.replica`) @default none: plain distribute */
  replica?: number;
  /** Disperse count of new gluster volumes in volume mode. (`glusterfs.disperse`) @default none */
  disperse?: number;
  /**
   * Pass `force` to `volume create`: needed for bricks on the root filesystem or several replica
   * bricks on one host. (`glusterfs.brickforce`)
   * @default false
   */
  brickForce: boolean;
  /** Prefix of the gluster volumes stowage makes in volume mode. (`glusterfs.volumeprefix`) @default 'stowage-' */
  volumePrefix: string;
  /** Extra `mount -t glusterfs -o` options, e.g. `acl,log-level=WARNING`. (`glusterfs.mountoptions`) @default none */
  mountOptions: string[];
  /** glusterd's unix socket, used by the gluster CLI. (`glusterfs.glusterdsocket`) @default '/var/run/glusterd.socket' */
  glusterdSocket: string;
  /** Bound, in milliseconds, on every gluster CLI call and mount. (`glusterfs.timeout`, in seconds) @default 20 s */
  timeoutMs: number;
  /** Enforce `size` with gluster directory quotas (enabled on the volume when first needed). (`glusterfs.quota`) @default true */
  quota: boolean;
  /**
   * Seconds gluster may go between re-checking a quota, set as both its soft and hard timeout
   * on every gluster volume where stowage sets or finds quotas. 0 re-checks on every write,
   * which keeps the overshoot to about a MiB; gluster's own defaults (60 s and 5 s) let writes
   * run tens of MiB past a limit. (`glusterfs.quotatimeout`, seconds from 0 to 60)
   * @default 0
   */
  quotaTimeoutS: number;
}

const POOL_KEYS = ['glusterfs.pool', 'glusterfs.volume', 'glusterfs.defaultvolumepool'] as const;
/** Set by stowage itself on every mount; a user value would silently lose our log or fail-over list. */
const RESERVED_MOUNT_OPTIONS = ['log-file', 'backup-volfile-servers', 'backupvolfile-server', 'volfile-id', 'subdir-mount'];

const HOST = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$/;
/** Gluster volume names: letters, digits, '-' and '_' (no '.'), not starting with '-'. */
export const GLUSTER_VOLUME_NAME = /^[A-Za-z0-9_][A-Za-z0-9_-]{0,255}$/;
/** Paths end up in gluster brick specs and in mount.glusterfs's word-split command line. */
const SAFE_PATH = /^\/[A-Za-z0-9._@+/-]*$/;

function list(value: string | undefined): string[] {
  return (value ?? '').split(',').map((s) => s.trim()).filter((s) => s.length > 0);
}

export function parseCount(key: string, value: string, min: number): number {
  if (!/^\d{1,2}$/.test(value) || Number(value) < min || Number(value) > 16) {
    throw invalid(`${key}=${JSON.stringify(value)}: expected a whole number from ${min} to 16`);
  }
  return Number(value);
}

export function parseBrickRoot(spec: string): BrickRoot {
  const at = spec.indexOf(':');
  const host = spec.slice(0, at);
  const given = at > 0 ? spec.slice(at + 1) : '';
  const path = normalize(given).replace(/\/+$/, '');
  // '..' is refused as written, not resolved: a brick root is where stowage deletes things.
  if (at <= 0 || !HOST.test(host) || !isAbsolute(path) || !SAFE_PATH.test(path) || path === '' || given.split('/').includes('..')) {
    throw invalid(`glusterfs.bricks entry ${JSON.stringify(spec)}: expected host:/absolute/dir (a directory below /, ` +
      'letters, digits and ._@+- only), e.g. gl1:/data/bricks');
  }
  if (host === 'localhost' || /^127\./.test(host)) {
    throw invalid(`glusterfs.bricks entry ${JSON.stringify(spec)}: gluster refuses localhost bricks; use the host's name`);
  }
  return { host, path };
}

function parseMountOption(option: string): string {
  const match = /^([A-Za-z][A-Za-z0-9_-]*)(?:=([A-Za-z0-9_.:/@+-]+))?$/.exec(option);
  if (!match) throw invalid(`glusterfs.mountoptions entry ${JSON.stringify(option)}: expected name or name=value`);
  if (RESERVED_MOUNT_OPTIONS.includes(match[1]!)) {
    throw invalid(`glusterfs.mountoptions: ${match[1]} is set by stowage itself (from glusterfs.servers and the node's state root)`);
  }
  return option;
}

function parsePoolName(value: string, key: string): string {
  if (!GLUSTER_VOLUME_NAME.test(value)) {
    throw invalid(`${key}=${JSON.stringify(value)} is not a gluster volume name (letters, digits, '-' and '_')`);
  }
  return value;
}

function parseSeconds(value: string, key: string, min: number, max: number, expected: string): number {
  if (!/^\d{1,3}$/.test(value) || Number(value) < min || Number(value) > max) {
    throw invalid(`${key}=${JSON.stringify(value)}: expected ${expected}`);
  }
  return Number(value);
}

const glusterfsOptions = optionMap('glusterfs', {
  'glusterfs.servers': (value) => {
    const servers = list(value);
    if (servers.length === 0) throw invalid('glusterfs.servers is empty; give at least one gluster server host name');
    for (const server of servers) {
      if (!HOST.test(server)) throw invalid(`glusterfs.servers entry ${JSON.stringify(server)} is not a host name or IPv4 address`);
    }
    return servers;
  },
  'glusterfs.mode': (value, key): GlusterMode => {
    if (value !== 'subdir' && value !== 'volume') throw invalid(`${key}=${JSON.stringify(value)}: expected subdir or volume`);
    return value;
  },
  'glusterfs.pool': parsePoolName,
  'glusterfs.volume': parsePoolName,
  'glusterfs.defaultvolumepool': parsePoolName,
  'glusterfs.bricks': (value) => {
    const brickRoots = list(value).map(parseBrickRoot);
    const seen = new Set(brickRoots.map((b) => `${b.host}:${b.path}`));
    if (seen.size !== brickRoots.length) throw invalid('glusterfs.bricks lists the same brick root twice');
    return brickRoots;
  },
  'glusterfs.replica': (value, key) => parseCount(key, value, 2),
  'glusterfs.disperse': (value, key) => parseCount(key, value, 3),
  'glusterfs.brickforce': parseBoolOption,
  'glusterfs.volumeprefix': (value, key) => {
    if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/.test(value)) {
      throw invalid(`${key}=${JSON.stringify(value)}: 1-32 letters, digits, '-' and '_', starting with a letter or digit`);
    }
    return value;
  },
  'glusterfs.mountoptions': (value) => list(value).map(parseMountOption),
  'glusterfs.glusterdsocket': (value, key) => {
    if (!isAbsolute(value)) throw invalid(`${key}=${JSON.stringify(value)} must be an absolute path`);
    return value;
  },
  // Docker gives Create and Mount 2 minutes; an attach makes a few bounded calls, so each stays well below.
  'glusterfs.timeout': (value, key) => parseSeconds(value, key, 1, 100, 'seconds from 1 to 100'),
  'glusterfs.quota': parseBoolOption,
  // gluster's own bound on features.hard-timeout is 60 s.
  'glusterfs.quotatimeout': (value, key) => parseSeconds(value, key, 0, 60,
    'seconds from 0 (strict: the limit is checked on every write) to 60'),
});

/** Validates the daemon's `--opt glusterfs.*` map. */
export function parseGlusterfsOptions(raw: Record<string, string>): GlusterfsOptions {
  const given = glusterfsOptions.parse(raw);
  const mode = given['glusterfs.mode'] ?? 'subdir';
  const pools = [...new Set(POOL_KEYS.map((k) => given[k]).filter((v): v is string => v !== undefined))];
  if (pools.length > 1) throw invalid(`${POOL_KEYS.join(', ')} name the same pool volume; they disagree: ${pools.join(' vs ')}`);
  const pool = pools[0];
  const { 'glusterfs.replica': replica, 'glusterfs.disperse': disperse } = given;
  if (replica !== undefined && disperse !== undefined) throw invalid('glusterfs.replica and glusterfs.disperse exclude each other');
  const quota = given['glusterfs.quota'] ?? true;
  if (!quota && given['glusterfs.quotatimeout'] !== undefined) {
    throw invalid('glusterfs.quotatimeout only applies with quotas on; it conflicts with glusterfs.quota=false');
  }
  if (pool === undefined) {
    throw invalid(mode === 'subdir'
      ? 'glusterfs.pool (or glusterfs.defaultvolumepool) is required: the gluster volume that holds the stowage volumes'
      : 'glusterfs.pool is required in volume mode too: a small gluster volume where the nodes keep their shared ' +
        'cluster state (node records, references, locks)');
  }
  const brickRoots = given['glusterfs.bricks'] ?? [];
  const volumePrefix = given['glusterfs.volumeprefix'] ?? 'stowage-';
  if (mode === 'subdir') {
    for (const key of ['glusterfs.bricks', 'glusterfs.replica', 'glusterfs.disperse', 'glusterfs.brickforce', 'glusterfs.volumeprefix'] as const) {
      if (given[key] !== undefined) throw invalid(`${key} only applies in volume mode (glusterfs.mode=volume)`);
    }
  } else {
    if (brickRoots.length === 0) throw invalid('glusterfs.bricks is required in volume mode: brick roots such as gl1:/data/bricks,gl2:/data/bricks');
    // Every gluster volume under the prefix can be adopted and removed as a stowage volume: the
    // state pool among them would hand the cluster state to a container and delete it on rm.
    if (pool.startsWith(volumePrefix)) {
      throw invalid(`glusterfs.pool=${pool} lies inside the volume namespace of glusterfs.volumeprefix=${volumePrefix}: volume ` +
        `${pool.slice(volumePrefix.length)} could then be adopted, mounted and removed as the cluster state. Choose a state pool ` +
        'whose name does not start with the prefix, or another prefix');
    }
  }
  return {
    servers: given['glusterfs.servers'] ?? [hostname()],
    mode, pool, brickRoots, replica, disperse,
    brickForce: given['glusterfs.brickforce'] ?? false,
    volumePrefix,
    mountOptions: given['glusterfs.mountoptions'] ?? [],
    glusterdSocket: given['glusterfs.glusterdsocket'] ?? '/var/run/glusterd.socket',
    timeoutMs: (given['glusterfs.timeout'] ?? 20) * 1000,
    quota,
    quotaTimeoutS: given['glusterfs.quotatimeout'] ?? 0,
  };
}

/** Node-local places of the backend under `--root`. */
export function layout(root: string): { mounts: string; logs: string } {
  return { mounts: join(root, 'glusterfs', 'mnt'), logs: join(root, 'glusterfs', 'log') };
}
