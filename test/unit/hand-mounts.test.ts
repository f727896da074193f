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
import { createRequest } from '../../src/core/create-request.js';
import { RESTORE_MOUNT_PREFIX } from '../../src/core/mount-kinds.js';
import type { MountTable } from '../../src/core/mount-table.js';
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

/** A manager whose reconciliation drops an unaccounted Docker mount at once (grace 0), with its mount table. */
async function stackOn(fs: FsPort, engine = new EmptyEngine()): Promise<{ manager: VolumeManager; mounts: MountTable }> {
  const container = memContainer({ fs }, new ContainerModule(({ rebind }) => {
    rebind(TOKENS.ContainerReferences).toConstantValue(engine);
    rebind<ManagerConfig>(TOKENS.ManagerConfig).toConstantValue({ nodeId: 'node-a', onRemove: 'delete', mountGraceMs: 0, reconcileMs: 3_600_000 });
  }));
  const manager = container.get<VolumeManager>(TOKENS.VolumeManager);
  await manager.init();
  return { manager, mounts: container.get<MountTable>(TOKENS.MountTable) };
}

async function managerOn(fs: FsPort, engine = new EmptyEngine()): Promise<VolumeManager> {
  return (await stackOn(fs, engine)).manager;
}

const idsOf = (manager: VolumeManager, volume: string) =>
  manager.mountRecords().filter((r) => r.volume === volume).map((r) => `${r.id}x${r.count}`);

describe('mount records stowage makes itself', () => {
  it('are left by reconciliation with the engine, which drops a Docker mount no container accounts for', async () => {
    const { manager, mounts } = await stackOn(memFs());
    await manager.create('db');
    await manager.create('restored');
    await manager.mount('db', 'd0cker1d');
    const { mountpoint } = await manager.mountByHand('db');
    // A restore's record, as a restore makes it (no outside caller may use that id: see below).
    mounts.increment('restored', `${RESTORE_MOUNT_PREFIX}0123`, new Date().toISOString());
    await sleep(5);
    await manager.reconcileWithEngine();
    expect(idsOf(manager, 'db')).toEqual(['stowage-hand-clix1']);
    expect(idsOf(manager, 'restored')).toEqual([`${RESTORE_MOUNT_PREFIX}0123x1`]);
    expect(manager.path('db')).toBe(mountpoint);
    // A remove is refused naming what holds each volume: no container holds either.
    await expect(manager.remove('restored')).rejects.toMatchObject({
      code: ErrorCodes.VOLUME_IN_USE, message: `volume restored is mounted 1 time(s) on node node-a, by a restore from a backup (${RESTORE_MOUNT_PREFIX}0123)`,
    });
    await expect(manager.remove('db')).rejects.toMatchObject({ message: 'volume db is mounted 1 time(s) on node node-a, by hand (label cli)' });
    await manager.dispose();
  });

  it('refuses, from Docker or an embedding program, the ids stowage keeps for its own mounts', async () => {
    const manager = await managerOn(memFs());
    await manager.create('db');
    await manager.mountByHand('db');
    for (const id of [`${RESTORE_MOUNT_PREFIX}evil`, 'stowage-hand-cli']) {
      await expect(manager.mount('db', id)).rejects.toMatchObject({ code: ErrorCodes.INVALID_REQUEST, message: expect.stringMatching(/is refused: ids beginning stowage-restore- or stowage-hand- are kept for stowage's own mounts/) });
      await expect(manager.unmount('db', id)).rejects.toMatchObject({ code: ErrorCodes.INVALID_REQUEST });
    }
    // Nor an id whose record the records file would lose at the next start (a plain object's prototype key).
    await expect(manager.mount('db', '__proto__')).rejects.toMatchObject({ code: ErrorCodes.INVALID_REQUEST, message: expect.stringMatching(/not __proto__/) });
    expect(idsOf(manager, 'db')).toEqual(['stowage-hand-clix1']);
    // A label cannot smuggle the prefix in twice either: the id is given without it.
    await expect(manager.mountByHand('db', 'stowage-hand-cli')).rejects.toMatchObject({ code: ErrorCodes.INVALID_NAME, message: expect.stringMatching(/give LABEL alone/) });
    // Unmounting with the id copied whole says which label to give.
    await expect(manager.unmountByHand('db', 'stowage-hand-cli')).rejects.toMatchObject({
      code: ErrorCodes.MOUNT_NOT_FOUND, message: expect.stringMatching(/\(the label of mount id stowage-hand-cli is cli: give it without the prefix\)$/),
    });
    await manager.dispose();
  });

  it('a release of the volume drops the leaked Docker records and leaves a hand mount; naming the hand mount alone is refused unless forced', async () => {
    const manager = await managerOn(memFs());
    await manager.create('db');
    const { mountpoint } = await manager.mountByHand('db', 'shell');
    await manager.mount('db', 'd0cker1d');
    expect((await manager.release('db')).map((r) => r.id)).toEqual(['d0cker1d']);
    expect(idsOf(manager, 'db')).toEqual(['stowage-hand-shellx1']);
    expect(manager.path('db')).toBe(mountpoint);
    for (const request of [{}, { id: 'stowage-hand-shell' }]) {
      await expect(manager.release('db', request)).rejects.toMatchObject({
        code: ErrorCodes.VOLUME_IN_USE,
        message: expect.stringMatching(/volume db is mounted by hand on node node-a \(label shell\): such a mount is no leak/),
        remedies: [{ action: 'hand-unmount', volume: 'db', label: 'shell' }, { action: 'force-release', volume: 'db' }],
      });
    }
    await expect(manager.remove('db')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_IN_USE });
    expect((await manager.release('db', { force: true })).map((r) => r.id)).toEqual(['stowage-hand-shell']);
    expect(manager.path('db')).toBeUndefined();
    // Nothing left to release: the volume exists, its mount does not, and the code says which.
    await expect(manager.release('db')).rejects.toMatchObject({ code: ErrorCodes.MOUNT_NOT_FOUND, message: expect.stringMatching(/has no mount records of volume db$/) });
    await manager.dispose();
  });

  it('mounting a held label checks the volume again: gone is said, and a volume made again under the name is mounted anew', async () => {
    const stack = await memStack();
    const { manager, vfs } = stack;
    await manager.create('db');
    await manager.mount('db', 'd0cker1d');
    const first = await manager.mountByHand('db');
    // Another node removes it by force.
    await vfs.remove('db', { retain: false });
    await expect(manager.mountByHand('db')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_NOT_FOUND });
    // Made again: the label's record of the old volume (and Docker's) give way to one of the new.
    await vfs.create(createRequest('db', {}, { createdAt: new Date(Date.now() + 1000).toISOString(), createdBy: 'node-b' }));
    const again = await manager.mountByHand('db');
    expect(again.mountpoint).toBe(first.mountpoint);
    expect(idsOf(manager, 'db')).toEqual(['stowage-hand-clix1']);
    await manager.dispose();
    // The record is the new volume's: a restart keeps it (an earlier volume's would be dropped).
    const after = await memStack({ fs: stack.fs });
    expect(idsOf(after.manager, 'db')).toEqual(['stowage-hand-clix1']);
    await after.manager.dispose();
  });

  it('concurrent mounts of one label are one mount', async () => {
    const manager = await managerOn(memFs());
    await manager.create('db');
    const answers = await Promise.all([1, 2, 3, 4, 5].map(() => manager.mountByHand('db', 'job')));
    expect(new Set(answers.map((a) => a.mountpoint)).size).toBe(1);
    expect(idsOf(manager, 'db')).toEqual(['stowage-hand-jobx1']);
    expect((await manager.unmountByHand('db', 'job')).remaining).toBe(0);
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
    await expect(manager.unmountByHand('db')).rejects.toMatchObject({ code: ErrorCodes.MOUNT_NOT_FOUND, message: expect.stringMatching(/no hand mount of volume db labelled cli/) });
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
