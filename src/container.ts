import 'reflect-metadata';
import * as fsp from 'node:fs/promises';
import { Container } from 'inversify';
import type { Backend } from './core/backend.js';
import { ExecaCommandRunner, type CommandRunner } from './core/command-runner.js';
import type { FsPort } from './core/fs-port.js';
import { consoleLogger, type Logger } from './core/logger.js';
import { MountTable } from './core/mount-table.js';
import { SocketRootLock, type RootLock } from './core/root-lock.js';
import { SharedClock, type Clock } from './core/clock.js';
import { DEFAULT_CLUSTER_SETTINGS, LocalCluster, type Cluster, type ClusterSettings } from './core/cluster/cluster.js';
import { SharedCluster } from './core/cluster/shared-cluster.js';
import { DockerEngine } from './core/engine/docker-engine.js';
import { TOKENS } from './core/tokens.js';
import { VolumeManager, type ManagerConfig, type RemovePolicy } from './core/volume-manager.js';
import { createBackend } from './backends/registry.js';

export interface StowageConfig {
  /** Backend name (`vfs`), or a ready Backend instance for embedders with their own storage. */
  backend: string | Backend;
  /** Backend options such as `vfs.path`. */
  backendOptions: Record<string, string>;
  /** Node-local state directory. */
  root: string;
  nodeId: string;
  onRemove: RemovePolicy;
  fs?: FsPort;
  runner?: CommandRunner;
  logger?: Logger;
  /** See ManagerConfig. */
  mountGraceMs?: number;
  reconcileMs?: number;
  /** Cluster coordination settings (and the local engine), used when the backend has a cluster state directory. */
  cluster?: Partial<ClusterSettings>;
}

/** Wires the core and one backend; the shells resolve TOKENS.VolumeManager from it. */
export function buildContainer(config: StowageConfig): Container {
  const container = new Container({ defaultScope: 'Singleton' });
  const fs = config.fs ?? fsp;
  const logger = config.logger ?? consoleLogger();
  container.bind<FsPort>(TOKENS.Fs).toConstantValue(fs);
  container.bind<Logger>(TOKENS.Logger).toConstantValue(logger);
  container.bind<CommandRunner>(TOKENS.CommandRunner).toConstantValue(config.runner ?? new ExecaCommandRunner());
  container.bind<ManagerConfig>(TOKENS.ManagerConfig).toConstantValue({
    nodeId: config.nodeId, onRemove: config.onRemove, mountGraceMs: config.mountGraceMs, reconcileMs: config.reconcileMs,
  });
  container.bind<MountTable>(TOKENS.MountTable).toDynamicValue(() => new MountTable(fs, config.root, config.nodeId));
  container.bind<RootLock>(TOKENS.RootLock).toDynamicValue(() => new SocketRootLock(config.root));
  container.bind<Backend>(TOKENS.Backend).toDynamicValue((ctx) => {
    if (typeof config.backend !== 'string') return config.backend;
    return createBackend(config.backend, {
      nodeId: config.nodeId,
      root: config.root,
      fs,
      runner: ctx.get<CommandRunner>(TOKENS.CommandRunner),
      log: logger,
    }, config.backendOptions);
  });
  const clock = new SharedClock();
  container.bind<Clock>(TOKENS.Clock).toConstantValue(clock);
  const settings: ClusterSettings = { ...DEFAULT_CLUSTER_SETTINGS, driverName: 'stowage', version: '0', ...config.cluster };
  container.bind<DockerEngine>(TOKENS.DockerEngine)
    .toConstantValue(new DockerEngine(settings.dockerSocket, settings.driverName, logger));
  container.bind<Cluster>(TOKENS.Cluster).toDynamicValue((ctx) => {
    const backend = ctx.get<Backend>(TOKENS.Backend);
    // Protection follows the storage, not the declared scope: a store that may be shared (vfs
    // always has a cluster directory) publishes this node's use and checks the others' on remove.
    if (!backend.clusterStateDir) return new LocalCluster();
    return new SharedCluster(fs, backend.clusterStateDir, config.nodeId, clock, settings, logger,
      ctx.get<DockerEngine>(TOKENS.DockerEngine));
  });
  container.bind<VolumeManager>(TOKENS.VolumeManager).to(VolumeManager);
  return container;
}
