import { createFsFromVolume, Volume } from 'memfs';
import { ContainerModule, type Container } from 'inversify';
import { buildContainer } from '../../src/container.js';
import type { Backend } from '../../src/core/backend.js';
import { ExecaCommandRunner } from '../../src/core/command-runner.js';
import type { FsPort } from '../../src/core/fs-port.js';
import { silentLogger } from '../../src/core/logger.js';
import { NoRootLock } from '../../src/core/root-lock.js';
import { LocalCluster } from '../../src/core/cluster/cluster.js';
import { TOKENS } from '../../src/core/tokens.js';
import type { RemovePolicy, VolumeManager } from '../../src/core/volume-manager.js';
import { VfsBackend } from '../../src/backends/vfs/vfs-backend.js';
import { RecordingBackend } from './recording-backend.js';

export function memFs(): FsPort {
  // memfs implements the fs/promises surface stowage uses; its types differ only nominally.
  return createFsFromVolume(new Volume()).promises as unknown as FsPort;
}

/**
 * What an in-memory stack replaces: memfs has no unix socket to lock the root with, and one
 * test process is one node, so there is no cluster to coordinate with.
 */
const inMemory = new ContainerModule(({ rebind }) => {
  rebind(TOKENS.RootLock).toConstantValue(new NoRootLock());
  rebind(TOKENS.Cluster).toConstantValue(new LocalCluster());
});

export interface MemContainerOptions {
  fs: FsPort;
  onRemove?: RemovePolicy;
  nodeId?: string;
  /** A backend name or instance instead of vfs (on `fs`, root `/state`). */
  backend?: string | Backend;
  backendOptions?: Record<string, string>;
}

/** The daemon's container with state in `/state` on memfs; further `overrides` rebind what a test replaces. */
export function memContainer(opts: MemContainerOptions, ...overrides: ContainerModule[]): Container {
  return buildContainer({
    backend: opts.backend ?? 'vfs', backendOptions: opts.backendOptions ?? {}, root: '/state', nodeId: opts.nodeId ?? 'node-a',
    onRemove: opts.onRemove ?? 'delete', fs: opts.fs, runner: new ExecaCommandRunner(), logger: silentLogger,
  }, inMemory, ...overrides);
}

export interface Stack {
  fs: FsPort;
  backend: RecordingBackend;
  vfs: VfsBackend;
  manager: VolumeManager;
}

/** A VolumeManager over vfs on memfs; pass the same fs again to simulate a daemon restart. */
export async function memStack(opts: {
  fs?: FsPort; onRemove?: RemovePolicy; nodeId?: string;
  /** Runs before the manager starts: a fault the start must meet. */
  beforeInit?: (backend: RecordingBackend) => void;
} = {}): Promise<Stack> {
  const fs = opts.fs ?? memFs();
  const { beforeInit, ...containerOptions } = opts;
  const container = memContainer({ ...containerOptions, fs });
  let vfs: VfsBackend | undefined;
  container.onActivation<Backend>(TOKENS.Backend, (_ctx, inner) => {
    if (!(inner instanceof VfsBackend)) throw new Error(`memStack expects the vfs backend, got ${inner.name}`);
    vfs = inner;
    return new RecordingBackend(inner);
  });
  const manager = container.get<VolumeManager>(TOKENS.VolumeManager);
  const backend = container.get<RecordingBackend>(TOKENS.Backend);
  beforeInit?.(backend);
  await manager.init();
  return { fs, backend, vfs: vfs!, manager };
}

/** Leaves the stack as a SIGKILLed daemon would: state on disk, lock held by a pid that cannot exist. */
export async function simulateCrash(stack: Stack): Promise<void> {
  await stack.fs.writeFile('/state/daemon.lock', '4194305\n');
}
