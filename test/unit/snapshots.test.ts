import { describe, expect, it } from 'vitest';
import type { SnapshotRecord, SnapshotSource, SnapshotSupport } from '../../src/core/backend.js';
import { ErrorCodes, StowageError } from '../../src/core/errors.js';
import { TOKENS } from '../../src/core/tokens.js';
import type { VolumeManager } from '../../src/core/volume-manager.js';
import { memContainer, memStack } from '../helpers/memfs-stack.js';
import { RecordingBackend } from '../helpers/recording-backend.js';

/** Snapshots kept in memory, recording the order in which the core reached them. */
class MemorySnapshots implements SnapshotSupport {
  readonly taken = new Map<string, SnapshotRecord[]>();
  readonly calls: string[] = [];
  async createSnapshot(volume: string, snapshot: string): Promise<SnapshotRecord> {
    this.calls.push(`create ${volume}/${snapshot}`);
    const list = this.taken.get(volume) ?? [];
    if (list.some((s) => s.name === snapshot)) throw new StowageError(ErrorCodes.SNAPSHOT_EXISTS, `snapshot ${snapshot} exists`);
    const record = { name: snapshot, volume, createdAt: new Date().toISOString() };
    this.taken.set(volume, [...list, record]);
    return record;
  }
  async listSnapshots(volume: string): Promise<SnapshotRecord[]> {
    return this.taken.get(volume) ?? [];
  }
  async deleteSnapshot(volume: string, snapshot: string): Promise<void> {
    this.calls.push(`delete ${volume}/${snapshot}`);
    const list = this.taken.get(volume) ?? [];
    if (!list.some((s) => s.name === snapshot)) throw new StowageError(ErrorCodes.SNAPSHOT_NOT_FOUND, `no snapshot ${snapshot}`);
    this.taken.set(volume, list.filter((s) => s.name !== snapshot));
  }
  async openSnapshot(volume: string, snapshot: string): Promise<SnapshotSource> {
    this.calls.push(`open ${volume}/${snapshot}`);
    if (!(this.taken.get(volume) ?? []).some((s) => s.name === snapshot)) throw new StowageError(ErrorCodes.SNAPSHOT_NOT_FOUND, `no snapshot ${snapshot}`);
    return { kind: 'tree', path: `/snapshots/${volume}/${snapshot}`, release: async () => undefined };
  }
}

class SnapshottingBackend extends RecordingBackend {
  readonly snapshots = new MemorySnapshots();
}

async function managerWithSnapshots() {
  const stack = await memStack();
  await stack.manager.dispose();
  const backend = new SnapshottingBackend(stack.vfs);
  const { snapshots } = backend;
  const manager = memContainer({ fs: stack.fs, backend }).get<VolumeManager>(TOKENS.VolumeManager);
  await manager.init();
  return { manager, snapshots };
}

describe('snapshots through the core', () => {
  it('creates, lists and deletes snapshots of a backend that can take them', async () => {
    const { manager, snapshots } = await managerWithSnapshots();
    await manager.create('db');
    await manager.createSnapshot('db', 'before-upgrade');
    await manager.createSnapshot('db', 'after-upgrade');
    expect((await manager.listSnapshots('db')).map((s) => s.name)).toEqual(['before-upgrade', 'after-upgrade']);
    await expect(manager.createSnapshot('db', 'before-upgrade')).rejects.toMatchObject({ code: ErrorCodes.SNAPSHOT_EXISTS });
    await manager.deleteSnapshot('db', 'before-upgrade');
    expect((await manager.listSnapshots('db')).map((s) => s.name)).toEqual(['after-upgrade']);
    expect(snapshots.calls).toEqual(['create db/before-upgrade', 'create db/after-upgrade', 'create db/before-upgrade', 'delete db/before-upgrade']);
  });

  it('validates snapshot names before the backend sees them', async () => {
    const { manager, snapshots } = await managerWithSnapshots();
    await expect(manager.createSnapshot('db', '../escape')).rejects.toMatchObject({ code: ErrorCodes.INVALID_NAME, message: 'invalid snapshot name "../escape": path separators are not allowed' });
    await expect(manager.deleteSnapshot('db', 'a/b')).rejects.toMatchObject({ code: ErrorCodes.INVALID_NAME });
    expect(snapshots.calls).toEqual([]);
  });

  it('says which backends can snapshot when this one cannot', async () => {
    const { manager } = await memStack();
    await manager.create('plain');
    await expect(manager.createSnapshot('plain', 'snap')).rejects.toMatchObject({
      code: ErrorCodes.NOT_SUPPORTED, message: expect.stringMatching(/the vfs backend cannot snapshot volumes \(volume plain\)/),
      remedies: [{ action: 'use-backend', capability: 'snapshots' }],
    });
  });
});
