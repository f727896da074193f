import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { dockerSocketPath } from '../docker-engine/docker-engine.js';
import { validateMountDir } from '../../core/mount-dir.js';
import { ErrorCodes, StowageError } from '../../core/errors.js';
import { isValidNodeId } from '../../core/names.js';
import { parseKeyValuePairs } from '../../core/options.js';
import { LOG_LEVELS, type LogLevel } from '../../core/logger.js';
import { parseMetricsAddress, type MetricsAddress } from '../metrics/metrics-server.js';
import type { RemovePolicy } from '../../core/volume-manager.js';
import { startDaemon, type DaemonSettings } from './daemon.js';

const DEFAULT_DOCKER_SOCKET = '/var/run/docker.sock';

const collect = (value: string, previous: string[]) => [...previous, value];

/**
 * Seconds on the command line, milliseconds inside: a plain decimal number from 0.1 to 86400.
 * Not what Number() takes besides (`0x10`, `1e3`), and nothing that rounds to 0 ms, where a
 * timer would spin.
 */
function seconds(value: string): number {
  const n = /^(\d+(\.\d*)?|\.\d+)$/.test(value.trim()) ? Number(value) : Number.NaN;
  if (!Number.isFinite(n) || n < 0.1 || n > 86_400) throw new InvalidArgumentError('expected a number of seconds, from 0.1 to 86400');
  return Math.round(n * 1000);
}

const NODE_ID_RULE = 'use up to 63 letters, digits, "_", "." and "-"';

function nodeId(value: string): string {
  if (!isValidNodeId(value)) throw new InvalidArgumentError(NODE_ID_RULE);
  return value;
}

/** --root: a directory of stowage's own; `/` or a relative path is a mistake to stop on, not to write state into. */
function stateRoot(value: string): string {
  try {
    return validateMountDir(value);
  } catch {
    throw new InvalidArgumentError('expected an absolute path other than /, without "." or ".." parts (a directory of stowage\'s own)');
  }
}

function mountDir(value: string): string {
  try {
    return validateMountDir(value);
  } catch {
    throw new InvalidArgumentError('expected an absolute path other than /, without "." or ".." parts');
  }
}

/** What `docker plugin ls` shows: [registry/]repo[:tag], lower case, as Docker's reference grammar allows. */
function driverName(value: string): string {
  if (!/^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$/.test(value)) {
    throw new InvalidArgumentError('expected a plugin name such as stowage:latest or registry.example.com/stowage:1.0');
  }
  return value;
}

function metricsAddress(value: string): MetricsAddress {
  try {
    return parseMetricsAddress(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

/** `none` turns the engine off (false); anything else must name a unix socket. */
function dockerHost(value: string): string | false {
  if (value === 'none') return false;
  try {
    return dockerSocketPath(value);
  } catch {
    throw new InvalidArgumentError('expected unix:///path/to/docker.sock or none');
  }
}

export interface DaemonFlags {
  backend?: string;
  drivers?: string;
  opt: string[];
  driverOpts: string[];
  root: string;
  nodeId?: string;
  onRemove: RemovePolicy;
  dockerHost?: string | false;
  heartbeatInterval: number;
  staleAfter: number;
  mountGrace: number;
  reconcileInterval: number;
  mountDir?: string;
  driverName?: string;
  metrics?: MetricsAddress;
  logLevel: LogLevel;
}

/**
 * Every daemon flag also reads an environment variable, the same names a systemd
 * EnvironmentFile and the managed plugin's settable `env` use. A flag on the command line wins.
 */
export const DAEMON_ENV = {
  backend: 'STOWAGE_BACKEND',
  opts: 'STOWAGE_OPTS',
  root: 'STOWAGE_ROOT',
  nodeId: 'STOWAGE_NODE_ID',
  onRemove: 'STOWAGE_ON_REMOVE',
  dockerHost: 'STOWAGE_DOCKER_HOST',
  heartbeatInterval: 'STOWAGE_HEARTBEAT_INTERVAL',
  staleAfter: 'STOWAGE_STALE_AFTER',
  mountGrace: 'STOWAGE_MOUNT_GRACE',
  reconcileInterval: 'STOWAGE_RECONCILE_INTERVAL',
  mountDir: 'STOWAGE_MOUNT_DIR',
  driverName: 'STOWAGE_DRIVER_NAME',
  metrics: 'STOWAGE_METRICS',
  logLevel: 'STOWAGE_LOG_LEVEL',
} as const;

/**
 * An empty variable means "not set": an EnvironmentFile line `STOWAGE_NODE_ID=` or a plugin
 * setting left at "" must fall back to the default, not fail to parse.
 */
function dropEmptyDaemonEnv(env: NodeJS.ProcessEnv): void {
  for (const name of [...Object.values(DAEMON_ENV), 'STOWAGE_SOCKET']) {
    if (env[name] !== undefined && env[name]!.trim() === '') delete env[name];
  }
}

/** STOWAGE_OPTS: backend options as whitespace-separated key=value pairs. */
export function backendOptionsFromEnv(value: string | undefined): string[] {
  return value === undefined ? [] : value.split(/\s+/).filter((pair) => pair !== '');
}

/** The host name when --node-id is not given; it must pass the same rule. */
function defaultNodeId(): string {
  const name = hostname();
  if (!isValidNodeId(name)) {
    throw new InvalidArgumentError(`the host name ${JSON.stringify(name)} is not a valid node id (${NODE_ID_RULE}); choose one with --node-id`);
  }
  return name;
}

/** `stowage daemon`: flags (Convoy's names too) parsed by commander, then the daemon until a signal. */
export function addDaemonCommand(program: Command, socketOf: (cmd: Command) => string, fail: (err: unknown) => never): void {
  dropEmptyDaemonEnv(process.env);
  addDaemonOptions(program.command('daemon')
    .description('run the daemon: Docker volume plugin and control API on one unix socket'))
    .action(async (flags: DaemonFlags, cmd: Command) => {
      const daemon = await startDaemon(daemonSettings(flags, socketOf(cmd)));
      const shutdown = (signal: string) => {
        daemon.log.info(`${signal} received, stopping`);
        daemon.stop().then(() => process.exit(0), fail);
      };
      process.once('SIGTERM', () => shutdown('SIGTERM'));
      process.once('SIGINT', () => shutdown('SIGINT'));
    });
}

/** The daemon's flags, with their environment variables; `stowage doctor` takes the same ones. */
export function addDaemonOptions(command: Command): Command {
  dropEmptyDaemonEnv(process.env);
  return command
    .addOption(new Option('--backend <name>', 'storage backend (default: vfs)').env(DAEMON_ENV.backend))
    .addOption(new Option('--drivers <name>', 'alias of --backend (Convoy)').conflicts('backend'))
    .option('--opt <key=value>',
      `backend option, e.g. vfs.path=/mnt/nfs (repeatable; ${DAEMON_ENV.opts} holds more, space-separated, that flags override)`,
      collect, [])
    .option('--driver-opts <key=value>', 'alias of --opt (Convoy)', collect, [])
    .addOption(new Option('--root <dir>', 'node-local state directory').argParser(stateRoot).env(DAEMON_ENV.root).default('/var/lib/stowage'))
    .addOption(new Option('--node-id <name>', 'this node\'s id (default: the host name)').argParser(nodeId).env(DAEMON_ENV.nodeId))
    .addOption(new Option('--on-remove <policy>', 'what volume removal does with data').choices(['delete', 'retain']).default('delete')
      .env(DAEMON_ENV.onRemove))
    .addOption(new Option('--docker-host <unix://path>',
      `local Docker engine, to learn which containers use volumes (default: unix://${DEFAULT_DOCKER_SOCKET} when present; "none" to disable)`)
      .argParser(dockerHost).env(DAEMON_ENV.dockerHost))
    .addOption(new Option('--heartbeat-interval <seconds>', 'how often this node publishes itself on shared storage')
      .argParser(seconds).default(5_000, '5').env(DAEMON_ENV.heartbeatInterval))
    .addOption(new Option('--stale-after <seconds>', 'when a silent node counts as stale').argParser(seconds).default(30_000, '30')
      .env(DAEMON_ENV.staleAfter))
    .addOption(new Option('--mount-grace <seconds>', 'age after which a mount record no live container accounts for is dropped')
      .argParser(seconds).default(60_000, '60').env(DAEMON_ENV.mountGrace))
    .addOption(new Option('--reconcile-interval <seconds>', 'how often mount records are checked against the Docker engine')
      .argParser(seconds).default(60_000, '60').env(DAEMON_ENV.reconcileInterval))
    .addOption(new Option('--mount-dir <dir>',
      'present mounted volumes as bind mounts at <dir>/<name> (a managed plugin\'s propagatedMount); default: the backend\'s own paths')
      .argParser(mountDir).env(DAEMON_ENV.mountDir))
    .addOption(new Option('--driver-name <name>',
      'the volume driver name the engine shows for this plugin (a managed plugin: its name with tag, e.g. stowage:latest); default: the socket\'s name')
      .argParser(driverName).env(DAEMON_ENV.driverName))
    .addOption(new Option('--metrics <address>',
      'serve Prometheus metrics at http://<address>/metrics: HOST:PORT (e.g. 127.0.0.1:9468) or unix:/path; default: off')
      .argParser(metricsAddress).env(DAEMON_ENV.metrics))
    .addOption(new Option('--log-level <level>', 'lowest level logged (debug adds every external command run)')
      .choices([...LOG_LEVELS]).default('info').env(DAEMON_ENV.logLevel));
}

/** What the flags (and their variables) ask for, checked; `socket` is the global --socket. */
export function daemonSettings(flags: DaemonFlags, socket: string): DaemonSettings {
  if (flags.staleAfter < 2 * flags.heartbeatInterval) {
    throw new StowageError(ErrorCodes.INVALID_OPTION,
      `--stale-after (${flags.staleAfter / 1000} s) must be at least twice --heartbeat-interval (${flags.heartbeatInterval / 1000} s): ` +
      'a node that is alive would count as stale between two of its heartbeats, and could be forgotten');
  }
  return {
    backend: flags.backend ?? flags.drivers ?? 'vfs',
    backendOptions: {
      ...parseKeyValuePairs(backendOptionsFromEnv(process.env[DAEMON_ENV.opts]), DAEMON_ENV.opts),
      ...parseKeyValuePairs([...flags.driverOpts, ...flags.opt], '--opt'),
    },
    root: flags.root,
    socket,
    nodeId: flags.nodeId ?? defaultNodeId(),
    onRemove: flags.onRemove,
    dockerSocket: flags.dockerHost === undefined
      ? (existsSync(DEFAULT_DOCKER_SOCKET) ? DEFAULT_DOCKER_SOCKET : undefined)
      : flags.dockerHost || undefined,
    heartbeatMs: flags.heartbeatInterval,
    staleAfterMs: flags.staleAfter,
    mountGraceMs: flags.mountGrace,
    reconcileMs: flags.reconcileInterval,
    mountDir: flags.mountDir,
    driverName: flags.driverName,
    metrics: flags.metrics,
    logLevel: flags.logLevel,
  };
}
