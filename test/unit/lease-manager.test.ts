/**
 * The core's side of the lease: VolumeManager hands the cluster lock's lease to the backend and
 * checks it before its own destructive step (a unit test of the error path: the lease is a stub;
 * the real lock's lapse is shown in cluster-lock, vfs-lock-lapse and glusterfs-lock-lapse tests).
 */
import { ContainerModule } from 'inversify';
import { describe, expect, it } from 'vitest';
import type { CreateRequest, RemoveRequest } from '../../src/core/backend.js';
import { LocalCluster } from '../../src/core/cluster/cluster.js';
import { LockLease, type Lease } from '../../src/core/cluster/lease.js';
import { ExecaCommandRunner } from '../../src/core/command-runner.js';
import { ErrorCodes } from '../../src/core/errors.js';
import { silentLogger } from '../../src/core/logger.js';
import { TOKENS } from '../../src/core/tokens.js';
import type { VolumeManager } from '../../src/core/volume-manager.js';
import { VfsBackend } from '../../src/backends/vfs/vfs-backend.js';
import { parseVfsOptions } from '../../src/backends/vfs/vfs-options.js';
import { memContainer, memFs } from '../helpers/memfs-stack.js';
import { RecordingBackend } from '../helpers/recording-backend.js';

/** A cluster whose lock hands out `lease`. */
class LeasedCluster extends LocalCluster {
  constructor(private readonly lease: Lease) {
    super();
  }
  override withLock<T>(_name: string, task: (lease: Lease) => Promise<T>): Promise<T> {
    return task(this.lease);
  }
}

class LeaseSpy extends RecordingBackend {
  readonly leases: Array<Lease | undefined> = [];
  override create(r: CreateRequest) { this.leases.push(r.lease); return super.create(r); }
  override remove(name: string, r: RemoveRequest) { this.leases.push(r.lease); return super.remove(name, r); }
}

async function stack(lease: Lease) {
  const fs = memFs();
  const vfs = new VfsBackend({ nodeId: 'node-a', root: '/state', fs, runner: new ExecaCommandRunner(), log: silentLogger },
    parseVfsOptions({}, '/state'));
  const backend = new LeaseSpy(vfs);
  const leased = new ContainerModule(({ rebind }) => {
    rebind(TOKENS.Cluster).toConstantValue(new LeasedCluster(lease));
  });
  const manager = memContainer({ fs, backend }, leased).get<VolumeManager>(TOKENS.VolumeManager);
  await manager.init();
  return { fs, backend, manager };
}

describe('VolumeManager and the cluster lock lease', () => {
  it('passes the lease with create and remove', async () => {
    const lease = new LockLease('vol', 60_000, 10_000, LockLease.stamp());
    const { backend, manager } = await stack(lease);
    await manager.create('vol');
    await manager.remove('vol');
    expect(backend.leases).toEqual([lease, lease]);
  });

  it('refuses a remove whose lease was lost before it reaches the backend, and the volume stays', async () => {
    const lease = new LockLease('vol', 60_000, 10_000, LockLease.stamp());
    const { fs, backend, manager } = await stack(lease);
    await manager.create('vol');
    await fs.writeFile('/state/volumes/vol/data', 'kept');
    lease.lose('its lock file was removed (another node judged it expired)');
    await expect(manager.remove('vol')).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE,
      message: expect.stringMatching(/^lost the cluster lock on volume vol \(could not renew for [\d.]+ s: its lock file was removed .*\): stopped before removing volume vol; nothing was deleted; try again$/),
    });
    expect(backend.count('remove')).toBe(0);
    expect((await manager.get('vol')).name).toBe('vol');
    expect(await fs.readFile('/state/volumes/vol/data', 'utf8')).toBe('kept');
  });
});
