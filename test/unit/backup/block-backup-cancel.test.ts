import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { BLOCK_SIZE } from '../../../src/core/backup/block-format.js';
import { createBlockBackup, type BlockBackupHost } from '../../../src/core/backup/block-backup-service.js';
import type { BlockSupport } from '../../../src/core/backup/block-support.js';
import type { JobProgress } from '../../../src/core/backup/service-contract.js';
import { Repository } from '../../../src/core/backup/index.js';
import { silentLogger } from '../../../src/core/logger.js';

/** A file stands in for the snapshot's device; the pool's answers are fixed (the VM suite runs the real ones). */
function fileBlocks(device: string, sizeBytes: number): BlockSupport {
  return {
    snapshotIdentity: async (_volume, snapshot) => `pool:${snapshot}`,
    openSnapshotDevice: async () => ({ path: device, sizeBytes, filesystem: 'ext4', release: async () => undefined }),
    mappedRanges: async () => [{ offsetBytes: 0, lengthBytes: sizeBytes }],
    changedRanges: async () => [],
    writeNewVolume: async () => { throw new Error('not used here'); },
  };
}

describe('a block backup cancelled after its last block was read', () => {
  let dir = '';
  beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'stowage-block-cancel-')); });
  afterEach(async () => { await rm(dir, { recursive: true, force: true }); });

  it('writes no record, and deletes the snapshot it took', async () => {
    const size = 3 * BLOCK_SIZE;
    const device = join(dir, 'dev');
    await writeFile(device, randomBytes(size));
    const repo = await Repository.init(new VfsBlobStore(join(dir, 'repo'), { durable: false }));
    const snapshots = { taken: [] as string[], deleted: [] as string[] };
    const host: BlockBackupHost = {
      createSnapshot: async (_volume, name) => { snapshots.taken.push(name); },
      deleteSnapshot: async (_volume, name) => { snapshots.deleted.push(name); },
    };
    const cancel = new AbortController();
    const reports: JobProgress[] = [];
    // The cancel comes as the job says every byte is read: between there and the record, only
    // the signal handed down can stop it.
    const report = (p: JobProgress) => {
      reports.push(p);
      if (p.phase === 'backup' && p.bytes === size) cancel.abort(new Error('cancelled by the test'));
    };
    await expect(createBlockBackup(host, fileBlocks(device, size), silentLogger, 'devicemapper', 'pg', repo, { signal: cancel.signal }, report))
      .rejects.toThrow('cancelled by the test');
    expect(reports.at(-1)).toMatchObject({ phase: 'backup', bytes: size });
    expect(await (await Repository.open(repo.store)).listBackups('pg')).toEqual([]);
    expect(snapshots.deleted).toEqual(snapshots.taken);
    expect(snapshots.taken).toHaveLength(1);
  });
});
