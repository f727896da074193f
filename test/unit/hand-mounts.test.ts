/**
 * Mount records stowage makes itself: a hand mount (`stowage mount`, mountByHand) and a
 * restore's. Reconciliation with the engine drops a Docker mount no container accounts for,
 * never these; a hand mount holds its volume until it is unmounted the same way.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { ContainerModule } from 'inversify';
import { describe, expect, it } from 'vitest';
import type { ContainerReferences, ContainerScan } from '../../src/core/container-references.js';
import { ErrorCodes } from '../../src/core/errors.js';
import type { FsPort } from '../../src/core/fs-port.js';
import { RESTORE_MOUNT_PREFIX } from '../../src/core/mount-kinds.js';
import { TOKENS } from '../../src/core/tokens.js';
import type { ManagerConfig, VolumeManager } from '../../src/core/volume-manager.js';
import { memContainer, memFs, memStack } from '../helpers/memfs-stack.js';

/** An engine that sees no container at all, or none that can be asked. */
class EmptyEngine implements ContainerReferences {
  readonly configured = true;
  scanResult: ContainerScan = { reachable: true, byVolume: {} };
  async scan(): Promise<ContainerScan> { return this.scanResult; }
  onEvent(): void {}
  stop(): void {}
}

/** A manager whose reconciliation drops an unaccounted Docker mount at once (grace 0). */
async function managerOn(fs: FsPort, engine = new EmptyEngine()): Promise<VolumeManager> {
  const container = memContainer({ fs }, new ContainerModule(({ rebind }) => {
    rebind(TOKENS.ContainerReferences).toConstantValue(engine);
    rebind<ManagerConfig>(TOKENS.ManagerConfig).toConstantValue({ nodeId: 'node-a', onRemove: 'delete', mountGraceMs: 0, reconcileMs: 3_600_000 });
  }));
  const manager = container.get<VolumeManager>(TOKENS.VolumeManager);
  await manager.init();
  return manager;
}

const idsOf = (manager: VolumeManager, volume: string) =>
  manager.mountRecords().filter((r) => r.volume === volume).map((r) => `${r.id}x${r.count}`);

describe('mount records stowage makes itself', () => {
  it('are left by reconciliation with the engine, which drops a Docker mount no container accounts for', async () => {
    const manager = await managerOn(memFs());
    await manager.create('db');
    await manager.create('restored');
    await manager.mount('db', 'd0cker1d');
    const { mountpoint } = await manager.mountByHand('db');
    await manager.mount('restored', `${RESTORE_MOUNT_PREFIX}0123`);
    await sleep(5);
    await manager.reconcileWithEngine();
    expect(idsOf(manager, 'db')).toEqual(['stowage-hand-clix1']);
    expect(idsOf(manager, 'restored')).toEqual([`${RESTORE_MOUNT_PREFIX}0123x1`]);
    expect(manager.path('db')).toBe(mountpoint);
    expect(manager.path('restored')).toBeDefined();
    await manager.dispose();
  });

  it('a hand mount is held or not: a label mounted twice is one mount, and one unmount ends it', async () => {
    const manager = await managerOn(memFs());
    await manager.create('db');
    const first = await manager.mountByHand('db');
    const again = await manager.mountByHand('db');
    expect(again).toEqual(first);
    expect(first).toMatchObject({ volume: 'db', label: 'cli', id: 'stowage-hand-cli' });
    expect((await manager.get('db')).mountCount).toBe(1);
    await manager.mountByHand('db', 'job-7');
    await manager.mount('db', 'd0cker1d');
    expect((await manager.get('db')).mountCount).toBe(3);

    // Removing is refused, naming each label and the way to unmount it.
    const refused = manager.remove('db');
    await expect(refused).rejects.toMatchObject({
      code: ErrorCodes.VOLUME_IN_USE,
      message: expect.stringMatching(/mounted 3 time\(s\) on node node-a, some of them by hand \(label cli, job-7\); stop or remove the containers/),
      remedies: [{ action: 'hand-unmount', volume: 'db', label: 'cli' }, { action: 'hand-unmount', volume: 'db', label: 'job-7' }],
    });

    expect(await manager.unmountByHand('db')).toMatchObject({ label: 'cli', remaining: 2, mountpoint: first.mountpoint });
    await expect(manager.unmountByHand('db')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_NOT_FOUND, message: expect.stringMatching(/no hand mount of volume db labelled cli/) });
    await manager.unmount('db', 'd0cker1d');
    await expect(manager.remove('db')).rejects.toMatchObject({
      message: expect.stringMatching(/mounted 1 time\(s\) on node node-a, by hand \(label job-7\)$/),
      remedies: [{ action: 'hand-unmount', volume: 'db', label: 'job-7' }],
    });
    expect(await manager.unmountByHand('db', 'job-7')).toMatchObject({ remaining: 0 });
    expect(manager.path('db')).toBeUndefined();
    await manager.remove('db');
    await manager.dispose();
  });

  it('refuses a bad label, a volume that does not exist, and changes nothing', async () => {
    const manager = await managerOn(memFs());
    await manager.create('db');
    for (const label of ['', '../x', 'a b', '-lead', 'x'.repeat(64)]) {
      await expect(manager.mountByHand('db', label)).rejects.toMatchObject({ code: ErrorCodes.INVALID_NAME });
      await expect(manager.unmountByHand('db', label)).rejects.toMatchObject({ code: ErrorCodes.INVALID_NAME });
    }
    await expect(manager.mountByHand('nope')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_NOT_FOUND });
    await expect(manager.mountByHand('../db')).rejects.toMatchObject({ code: ErrorCodes.INVALID_NAME });
    expect(manager.mountRecords()).toEqual([]);
    await manager.dispose();
  });

  it('a hand mount outlasts a restart of the daemon, attached again', async () => {
    const fs = memFs();
    const before = await managerOn(fs);
    await before.create('db');
    const { mountpoint } = await before.mountByHand('db');
    await before.dispose();
    const after = await managerOn(fs);
    await after.reconcileWithEngine();
    expect(after.path('db')).toBe(mountpoint);
    expect(idsOf(after, 'db')).toEqual(['stowage-hand-clix1']);
    await after.dispose();
  });

  it('a hand unmount whose detach fails keeps the mount, and says so; the next one ends it', async () => {
    const { manager, backend } = await memStack();
    await manager.create('db');
    const { mountpoint } = await manager.mountByHand('db');
    backend.failDetach = Object.assign(new Error('umount: target is busy'), { code: 'EBUSY' });
    await expect(manager.unmountByHand('db')).rejects.toMatchObject({
      message: expect.stringMatching(/detaching volume db failed, so its mount record\(s\) stowage-hand-cli stay/),
    });
    expect(idsOf(manager, 'db')).toEqual(['stowage-hand-clix1']);
    expect(manager.path('db')).toBe(mountpoint);
    await expect(manager.remove('db')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_IN_USE });
    backend.failDetach = undefined;
    expect(await manager.unmountByHand('db')).toMatchObject({ remaining: 0 });
    expect(manager.mountRecords()).toEqual([]);
    await manager.remove('db');
    await manager.dispose();
  });
});
