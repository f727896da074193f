import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename } from 'node:path';
import { dockerSocketPath } from '../../core/engine/docker-engine.js';
import { VERSION } from '../../version.js';
import type { Server } from 'node:http';
import { ErrorCodes, StowageError } from '../../core/errors.js';
import { consoleLogger } from '../../core/logger.js';
import { parseKeyValuePairs } from '../../core/options.js';
import { isValidNodeId } from '../../core/names.js';
import { TOKENS } from '../../core/tokens.js';
import type { RemovePolicy, VolumeManager } from '../../core/volume-manager.js';
import { buildContainer } from '../../container.js';
import { closeServer, createApp, listenOnSocket } from '../server.js';
import { keepPluginActivated } from '../plugin-activation.js';
import type { DockerEngine } from '../../core/engine/docker-engine.js';

export interface DaemonFlags {
  backend?: string;
  drivers?: string;
  opt: string[];
  driverOpts: string[];
  root: string;
  socket: string;
  nodeId?: string;
  onRemove: string;
  dockerHost?: string;
  heartbeatInterval: string;
  staleAfter: string;
  mountGrace?: string;
  reconcileInterval?: string;
}

export interface RunningDaemon {
  manager: VolumeManager;
  server: Server;
  socket: string;
  stop(): Promise<void>;
}

function onRemovePolicy(value: string): RemovePolicy {
  if (value === 'delete' || value === 'retain') return value;
  throw new StowageError(ErrorCodes.INVALID_OPTION, `--on-remove ${JSON.stringify(value)}: expected delete or retain`);
}

function nodeIdOf(value: string | undefined): string {
  const id = value ?? hostname();
  if (!isValidNodeId(id)) {
    throw new StowageError(ErrorCodes.INVALID_OPTION,
      `--node-id ${JSON.stringify(id)}: use up to 63 letters, digits, "_", "." and "-"`);
  }
  return id;
}

function secondsFlag(flag: string, value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || n > 86_400) {
    throw new StowageError(ErrorCodes.INVALID_OPTION, `${flag} ${JSON.stringify(value)}: expected a number of seconds`);
  }
  return Math.round(n * 1000);
}

/** The local engine socket, or undefined when there is none to ask. */
function dockerSocketOf(flag: string | undefined): string | undefined {
  if (flag === 'none') return undefined;
  if (flag === undefined) return existsSync('/var/run/docker.sock') ? '/var/run/docker.sock' : undefined;
  try {
    return dockerSocketPath(flag);
  } catch (err) {
    throw new StowageError(ErrorCodes.INVALID_OPTION, (err as Error).message);
  }
}

export async function startDaemon(flags: DaemonFlags): Promise<RunningDaemon> {
  if (flags.backend && flags.drivers && flags.backend !== flags.drivers) {
    throw new StowageError(ErrorCodes.INVALID_OPTION, '--backend and --drivers name different backends; give one');
  }
  const log = consoleLogger();
  const container = buildContainer({
    backend: flags.backend ?? flags.drivers ?? 'vfs',
    backendOptions: parseKeyValuePairs([...flags.driverOpts, ...flags.opt], '--opt'),
    root: flags.root,
    nodeId: nodeIdOf(flags.nodeId),
    onRemove: onRemovePolicy(flags.onRemove),
    mountGraceMs: secondsFlag('--mount-grace', flags.mountGrace ?? '60'),
    reconcileMs: secondsFlag('--reconcile-interval', flags.reconcileInterval ?? '60'),
    logger: log,
    cluster: {
      heartbeatMs: secondsFlag('--heartbeat-interval', flags.heartbeatInterval),
      staleAfterMs: secondsFlag('--stale-after', flags.staleAfter),
      dockerSocket: dockerSocketOf(flags.dockerHost),
      // Docker names a legacy plugin after its socket file.
      driverName: basename(flags.socket).replace(/\.sock$/, ''),
      version: VERSION,
    },
  });
  const manager = container.get<VolumeManager>(TOKENS.VolumeManager);
  await manager.init();
  const server = await listenOnSocket(createApp(manager), flags.socket);
  log.info(`listening on ${flags.socket} (backend ${manager.backendName}, scope ${manager.scope})`);
  keepPluginActivated(container.get<DockerEngine>(TOKENS.DockerEngine), log);
  let stopping: Promise<void> | undefined;
  return {
    manager,
    server,
    socket: flags.socket,
    stop: () => {
      stopping ??= closeServer(server, flags.socket).then(() => manager.dispose());
      return stopping;
    },
  };
}
