import 'reflect-metadata';
import { Container, ContainerModule, type ResolutionContext } from 'inversify';
import type { Backend } from './core/backend.js';
import { ExecaCommandRunner, type CommandRunner } from './core/command-runner.js';
import type { ContainerReferences } from './core/container-references.js';
import type { FsPort } from './core/fs-port.js';
import { asFsPort, LocalFirstFs } from './core/local-fs.js';
import { consoleLogger, type Logger } from './core/logger.js';
import { MountDirBackend, validateMountDir } from './core/mount-dir.js';
import { MountTable } from './core/mount-table.js';
import { SocketRootLock, type RootLock } from './core/root-lock.js';
import { SharedClock, type Clock } from './core/clock.js';
import { DEFAULT_CLUSTER_SETTINGS, LocalCluster, type Cluster, type ClusterSettings } from './core/cluster/cluster.js';
import { SharedCluster } from './core/cluster/shared-cluster.js';
import { TOKENS } from './core/tokens.js';
import { RestoreJournal } from './core/backup/restore-journal.js';
import { BackupParents } from './core/backup/backup-parents.js';
import { OwnStorage } from './core/backup/own-storage.js';
import { VolumeManager, type ManagerConfig, type RemovePolicy } from './core/volume-manager.js';
import { CoreBackupService } from './core/backup/backup-service.js';
import type { BackupService } from './core/backup/service-contract.js';
import { BACKEND_REGISTRATION, type BackendRegistration } from './backends/backend-module.js';
import { BACKEND_MODULES, createRegisteredBackend } from './backends/registry.js';
import { dockerEngineModule, type EngineSettings } from './drivers/docker-engine/docker-engine-module.js';
import { SHELL_TOKENS } from './drivers/tokens.js';

export interface StowageConfig {
  /** Backend name (`vfs`), or a ready Backend instance for embedders with their own storage. */
  backend: string | Backend;
  /** Backend options such as `vfs.path`. */
  backendOptions: Record<string, string>;
  /** Node-local state directory. */
  root: string;
  /**
   * When set, mounted volumes are presented as bind mounts at `<mountDir>/<name>` (see
   * MountDirBackend): a managed plugin's `propagatedMount`.
   */
  mountDir?: string;
  nodeId: string;
  onRemove: RemovePolicy;
  fs?: FsPort;
  runner?: CommandRunner;
  logger?: Logger;
  /** See ManagerConfig. */
  mountGraceMs?: number;
  reconcileMs?: number;
  /** Cluster coordination settings, used when the backend has a cluster state directory. */
  cluster?: Partial<ClusterSettings>;
  /** The local Docker engine, asked which containers use volumes; none when `socket` is undefined. */
  engine?: Partial<EngineSettings>;
}

/** The core over the configured backend: the part every shell shares. */
function coreModule(config: StowageConfig): ContainerModule {
  const settings: ClusterSettings = { ...DEFAULT_CLUSTER_SETTINGS, version: '0', stateRoot: config.root, ...config.cluster };
  return new ContainerModule(({ bind }) => {
    bind<FsPort>(TOKENS.Fs).toConstantValue(config.fs ?? asFsPort(new LocalFirstFs()));
    bind<Logger>(TOKENS.Logger).toConstantValue(config.logger ?? consoleLogger());
    bind<CommandRunner>(TOKENS.CommandRunner).toDynamicValue((ctx) => config.runner ?? new ExecaCommandRunner(ctx.get<Logger>(TOKENS.Logger)));
    bind<ManagerConfig>(TOKENS.ManagerConfig).toConstantValue({
      nodeId: config.nodeId, onRemove: config.onRemove, mountGraceMs: config.mountGraceMs, reconcileMs: config.reconcileMs,
    });
    bind<MountTable>(TOKENS.MountTable).toDynamicValue((ctx) => new MountTable(ctx.get<FsPort>(TOKENS.Fs), config.root, config.nodeId));
    bind<RootLock>(TOKENS.RootLock).toDynamicValue((ctx) => new SocketRootLock(config.root, ctx.get<Logger>(TOKENS.Logger)));
    bind<Clock>(TOKENS.Clock).toDynamicValue(() => new SharedClock());
    bind<Backend>(TOKENS.Backend).toDynamicValue((ctx) => {
      const backend = configuredBackend(ctx);
      if (config.mountDir === undefined) return backend;
      return new MountDirBackend(backend, validateMountDir(config.mountDir), ctx.get<CommandRunner>(TOKENS.CommandRunner),
        ctx.get<FsPort>(TOKENS.Fs), ctx.get<Logger>(TOKENS.Logger), config.root);
    });
    const configuredBackend = (ctx: ResolutionContext): Backend => {
      if (typeof config.backend !== 'string') return config.backend;
      return createRegisteredBackend(ctx.getAll<BackendRegistration>(BACKEND_REGISTRATION), config.backend, {
        nodeId: config.nodeId,
        root: config.root,
        fs: ctx.get<FsPort>(TOKENS.Fs),
        runner: ctx.get<CommandRunner>(TOKENS.CommandRunner),
        log: ctx.get<Logger>(TOKENS.Logger),
      }, config.backendOptions);
    };
    bind<Cluster>(TOKENS.Cluster).toDynamicValue((ctx) => {
      const backend = ctx.get<Backend>(TOKENS.Backend);
      const { clusterStateDir } = backend.capabilities;
      // Protection follows the storage, not the declared scope: a store that may be shared (vfs
      // always has a cluster directory) publishes this node's use and checks the others' on remove.
      if (!clusterStateDir) return new LocalCluster();
      return new SharedCluster(ctx.get<FsPort>(TOKENS.Fs), clusterStateDir, config.nodeId,
        // SharedCluster stamps records with the storage's clock, which only SharedClock reads.
        ctx.get<SharedClock>(TOKENS.Clock), settings, ctx.get<Logger>(TOKENS.Logger),
        ctx.get<ContainerReferences>(TOKENS.ContainerReferences), backend.assertClusterStore?.bind(backend));
    });
    bind<RestoreJournal>(TOKENS.RestoreJournal).toDynamicValue((ctx) => new RestoreJournal(ctx.get<FsPort>(TOKENS.Fs), config.root));
    bind<BackupParents>(TOKENS.BackupParents).toDynamicValue((ctx) => new BackupParents(ctx.get<FsPort>(TOKENS.Fs), config.root));
    bind<OwnStorage>(TOKENS.OwnStorage).toDynamicValue((ctx) =>
      new OwnStorage([config.root, ...OwnStorage.storeOf(ctx.get<Backend>(TOKENS.Backend).capabilities.clusterStateDir)]));
    bind<VolumeManager>(TOKENS.VolumeManager).to(VolumeManager);
    bind<BackupService>(TOKENS.BackupService).to(CoreBackupService);
  });
}

/**
 * The composition root: the core, every registered backend (picked by `config.backend`), the
 * Docker engine adapter as the ContainerReferences port, then `modules`: the shells a caller
 * serves (SOCKET_MODULES for the daemon, the embedding API's module) and, in tests, overrides
 * that `rebind` what they replace. The daemon, the embedding API and the test stacks all
 * resolve what they use from here.
 */
export function buildContainer(config: StowageConfig, ...modules: ContainerModule[]): Container {
  const container = new Container({ defaultScope: 'Singleton' });
  container.bind<EngineSettings>(SHELL_TOKENS.EngineSettings).toConstantValue({
    socket: config.engine?.socket,
    driverName: config.engine?.driverName ?? 'stowage',
  });
  container.load(coreModule(config), ...BACKEND_MODULES, dockerEngineModule, ...modules);
  return container;
}
