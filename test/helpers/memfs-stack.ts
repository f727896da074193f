import { createFsFromVolume, Volume } from 'memfs';
import { ExecaCommandRunner } from '../../src/core/command-runner.js';
import type { FsPort } from '../../src/core/fs-port.js';
import { silentLogger } from '../../src/core/logger.js';
import { MountTable } from '../../src/core/mount-table.js';
import { NoRootLock } from '../../src/core/root-lock.js';
import { SharedClock } from '../../src/core/clock.js';
import { LocalCluster } from '../../src/core/cluster/cluster.js';
import { VolumeManager, type RemovePolicy } from '../../src/core/volume-manager.js';
import { VfsBackend } from '../../src/backends/vfs/vfs-backend.js';
import { parseVfsOptions } from '../../src/backends/vfs/vfs-options.js';
import { RecordingBackend } from './recording-backend.js';

export function memFs(): FsPort {
  // memfs implements the fs/promises surface stowage uses; its types differ only nominally.
  return createFsFromVolume(new Volume()).promises as unknown as FsPort;
}

export interface Stack {
  fs: FsPort;
  backend: RecordingBackend;
  vfs: VfsBackend;
  manager: VolumeManager;
}

/** A VolumeManager over vfs on memfs; pass the same fs again to simulate a daemon restart. */
export async function memStack(opts: { fs?: FsPort; onRemove?: RemovePolicy; nodeId?: string } = {}): Promise<Stack> {
  const fs = opts.fs ?? memFs();
  const nodeId = opts.nodeId ?? 'node-a';
  const vfs = new VfsBackend({ nodeId, root: '/state', fs, runner: new ExecaCommandRunner(), log: silentLogger },
    parseVfsOptions({}, '/state'));
  const backend = new RecordingBackend(vfs);
  const manager = new VolumeManager(backend, new MountTable(fs, '/state', nodeId),
    { nodeId, onRemove: opts.onRemove ?? 'delete' }, silentLogger, new NoRootLock(),
    new SharedClock(), new LocalCluster());
  await manager.init();
  return { fs, backend, vfs, manager };
}

/** Leaves the stack as a SIGKILLed daemon would: state on disk, lock held by a pid that cannot exist. */
export async function simulateCrash(stack: Stack): Promise<void> {
  await stack.fs.writeFile('/state/daemon.lock', '4194305\n');
}
