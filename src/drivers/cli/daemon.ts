import type { RequestListener, Server } from 'node:http';
import { basename } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { DAEMON_V8_FLAGS } from './daemon-v8-flags.js';
import { VERSION } from '../../version.js';
import { consoleLogger, type FlushableLogger, type LogLevel } from '../../core/logger.js';
import type { BackupService } from '../../core/backup/service-contract.js';
import { instrumentOperations } from '../metrics/instrument.js';
import type { StowageMetrics } from '../metrics/metrics.js';
import { serveMetrics, type MetricsAddress, type MetricsServer } from '../metrics/metrics-server.js';
import type { Backend } from '../../core/backend.js';
import { TOKENS } from '../../core/tokens.js';
import type { RemovePolicy, VolumeManager } from '../../core/volume-manager.js';
import { buildContainer } from '../../container.js';
import type { DockerEngine } from '../docker-engine/docker-engine.js';
import { keepPluginActivated } from '../docker-engine/plugin-activation.js';
import { claimSocket, closeServer } from '../server.js';
import { SOCKET_MODULES } from '../socket-module.js';
import type { JobRegistry } from '../control/jobs.js';
import { SHELL_TOKENS } from '../tokens.js';
import { importLazily } from '../../core/lazy-import.js';

/** The daemon's settings, parsed and checked from its flags (daemon-command.ts). */
export interface DaemonSettings {
  backend: string;
  backendOptions: Record<string, string>;
  root: string;
  socket: string;
  nodeId: string;
  onRemove: RemovePolicy;
  /** The local engine's socket; undefined when there is none to ask. */
  dockerSocket: string | undefined;
  heartbeatMs: number;
  staleAfterMs: number;
  mountGraceMs: number;
  reconcileMs: number;
  /** See StowageConfig.mountDir. */
  mountDir?: string;
  /** The driver name the engine shows in container mounts; default: the socket's name (a legacy plugin). */
  driverName?: string;
  /** How long a stop waits for cancelled jobs to end; default JOB_STOP_MS. */
  jobStopMs?: number;
  /** Where to serve Prometheus metrics; none when undefined. */
  metrics?: MetricsAddress;
  /** @default info */
  logLevel?: LogLevel;
}

export interface RunningDaemon {
  manager: VolumeManager;
  log: FlushableLogger;
  server: Server;
  socket: string;
  stop(): Promise<void>;
}

/** How long a stop waits for cancelled jobs to end (each stops at its next progress report, well under a second). */
const JOB_STOP_MS = 60_000;

export async function startDaemon(settings: DaemonSettings): Promise<RunningDaemon> {
  setFlagsFromString(DAEMON_V8_FLAGS);
  const log = consoleLogger({ level: settings.logLevel ?? 'info', base: { node: settings.nodeId } });
  const container = buildContainer({
    backend: settings.backend,
    backendOptions: settings.backendOptions,
    root: settings.root,
    nodeId: settings.nodeId,
    onRemove: settings.onRemove,
    mountGraceMs: settings.mountGraceMs,
    reconcileMs: settings.reconcileMs,
    mountDir: settings.mountDir,
    logger: log,
    cluster: { heartbeatMs: settings.heartbeatMs, staleAfterMs: settings.staleAfterMs, version: VERSION },
    engine: {
      socket: settings.dockerSocket,
      // Docker names a legacy plugin after its socket file.
      driverName: settings.driverName ?? basename(settings.socket).replace(/\.sock$/, ''),
    },
  }, ...SOCKET_MODULES);
  const claim = await claimSocket(settings.socket, { log });
  const manager = container.get<VolumeManager>(TOKENS.VolumeManager);
  const jobs = container.get<JobRegistry>(SHELL_TOKENS.Jobs);
  const backups = container.get<BackupService>(TOKENS.BackupService, { optional: true });
  // prom-client is loaded only when metrics are asked for: it costs the daemon ~13 MB and ~80 ms otherwise.
  const metrics: StowageMetrics | undefined = settings.metrics
    ? new (await importLazily(() => import('../metrics/metrics.js'), 'the metrics')).StowageMetrics(manager, container.get<Backend>(TOKENS.Backend), log)
    : undefined;
  // Before any request: the shells call these same instances.
  instrumentOperations(manager, backups, log, metrics);
  await manager.init();
  // Metrics first: whoever waits for the plugin socket (a supervisor, a test) then finds them
  // served too. With the plugin socket first, a scrape right after it could meet no metrics
  // socket yet (seen once in CI: ENOENT).
  let metricsServer: MetricsServer | undefined;
  try {
    if (metrics && settings.metrics) metricsServer = await serveMetrics(metrics, settings.metrics, log);
  } catch (err) {
    await manager.dispose();
    throw err;
  }
  let server: Server;
  try {
    server = await claim.listen(container.get<RequestListener>(SHELL_TOKENS.RequestListener));
  } catch (err) {
    await metricsServer?.close();
    throw err;
  }
  log.info(`listening on ${settings.socket} (backend ${manager.backendName}, scope ${manager.scope})`);
  // Whoever started the daemon may be waiting for this line.
  log.flush();
  keepPluginActivated(container.get<DockerEngine>(SHELL_TOKENS.DockerEngine), log);
  let stopping: Promise<void> | undefined;
  return {
    manager,
    log,
    server,
    socket: settings.socket,
    stop: () => {
      // Jobs first, while the socket still serves their followers (who then see them end as
      // cancelled): their locks are released and a cancelled restore's volume removed before the
      // backend is let go.
      stopping ??= jobs.stopAll(settings.jobStopMs ?? JOB_STOP_MS)
        .then(() => closeServer(server, settings.socket))
        .then(() => metricsServer?.close())
        .then(() => manager.dispose());
      return stopping;
    },
  };
}
