import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { backupBlocks, restoreBlocks } from '../../../src/core/backup/block-backup.js';
import { BLOCK_SIZE, blockList } from '../../../src/core/backup/block-format.js';
import { backupTree, deleteBackup, gc, Repository, restoreTree, verifyBackup } from '../../../src/core/backup/index.js';
import { ErrorCodes } from '../../../src/core/errors.js';
import { parseMappedRanges } from '../../../src/backends/devicemapper/thin-mappings-parser.js';
import { controlEndpoints } from '../../../src/drivers/control/endpoints.js';

const MiB = 1024 * 1024;
const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** A "device": a file of `blocks` 2 MiB blocks; `fill` gives each block's content (undefined: zeros). */
async function makeDevice(path: string, size: number, fill: (i: number) => Buffer | undefined): Promise<void> {
  const handle = await open(path, 'w');
  try {
    await handle.truncate(size);
    for (let i = 0; i * BLOCK_SIZE < size; i += 1) {
      const data = fill(i);
      if (data) await handle.write(data, 0, data.length, i * BLOCK_SIZE);
    }
  } finally {
    await handle.close();
  }
}

describe('block backups (library, a file standing in for the device)', () => {
  let dir = '';
  let repo: Repository;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'stowage-blocks-'));
    repo = await Repository.init(new VfsBlobStore(join(dir, 'repo'), { durable: false }));
  });
  afterEach(async () => { await rm(dir, { recursive: true, force: true }); });

  it('reads only the given ranges, stores zeros as holes, takes the base for the rest, dedups, and restores exactly', async () => {
    const size = 10 * BLOCK_SIZE + 4096; // a short last block
    const content = new Map<number, Buffer>([[0, randomBytes(BLOCK_SIZE)], [3, randomBytes(BLOCK_SIZE)], [4, Buffer.alloc(BLOCK_SIZE)], [10, randomBytes(4096)]]);
    content.set(7, content.get(3)!); // the same content twice: stored once
    const dev = join(dir, 'dev');
    await makeDevice(dev, size, (i) => content.get(i));
    const mapped = [0, 3, 4, 7, 10].map((i) => ({ offsetBytes: i * BLOCK_SIZE, lengthBytes: Math.min(BLOCK_SIZE, size - i * BLOCK_SIZE) }));
    const full = await backupBlocks(dev, repo, { volume: 'pg', sizeBytes: size, filesystem: 'ext4', ranges: mapped, source: 'snap-1', snapshotTaken: true });
    expect(full).toMatchObject({ kind: 'blocks', device: { sizeBytes: size, blockSize: BLOCK_SIZE, filesystem: 'ext4', source: 'snap-1', snapshotTaken: true } });
    expect(full.stats).toMatchObject({ entries: 11, filesRead: 5, bytesRead: 4 * BLOCK_SIZE + 4096, bytes: 3 * BLOCK_SIZE + 4096, newBlobs: 3 + 1 /* manifest */ });
    const listed: Array<string | null> = [];
    for await (const b of blockList(repo, full)) listed.push(b);
    expect(listed.map((b, i) => (b === null ? null : i))).toEqual([0, null, null, 3, null, null, null, 7, null, null, 10]);
    expect(listed[3]).toBe(listed[7]);

    // Change block 3 only; block 0's chunk is taken from the base without reading.
    const changed = randomBytes(BLOCK_SIZE);
    const handle = await open(dev, 'r+');
    await handle.write(changed, 0, BLOCK_SIZE, 3 * BLOCK_SIZE);
    await handle.close();
    const incr = await backupBlocks(dev, repo, { volume: 'pg', sizeBytes: size, filesystem: 'ext4', ranges: [{ offsetBytes: 3 * BLOCK_SIZE, lengthBytes: 65536 }], base: full });
    expect(incr.parent).toBe(full.id);
    expect(incr.stats).toMatchObject({ filesRead: 1, bytesRead: BLOCK_SIZE, newBlobs: 2 });

    // Restore onto a "device" holding garbage where mkfs would have written: mapped holes are zeroed.
    const target = join(dir, 'target');
    await makeDevice(target, size, (i) => (i === 1 || i === 3 ? randomBytes(BLOCK_SIZE) : undefined));
    const result = await restoreBlocks(repo, 'pg', incr.id, target, { mapped: [{ offsetBytes: BLOCK_SIZE, lengthBytes: BLOCK_SIZE }] });
    expect(result).toMatchObject({ blocksWritten: 4, zeroedBytes: BLOCK_SIZE });
    expect(sha(await readFile(target))).toBe(sha(await readFile(dev)));

    // Deleting the base leaves the incremental whole (GC keeps what a block manifest names).
    await deleteBackup(repo, 'pg', full.id);
    await gc(repo);
    const again = await Repository.open(repo.store);
    expect(await verifyBackup(again, 'pg', incr.id)).toMatchObject({ files: 1, chunks: 4 }); // blocks 0, 3 (new), 7 (3's old content), 10
    const target2 = join(dir, 'target2');
    await makeDevice(target2, size, () => undefined);
    await restoreBlocks(again, 'pg', incr.id, target2);
    expect(sha(await readFile(target2))).toBe(sha(await readFile(dev)));
  });

  it('a tree restore of a block backup is refused, naming the file-level kind; a file backup of the same volume ignores the block backup', async () => {
    const dev = join(dir, 'dev');
    await makeDevice(dev, BLOCK_SIZE, () => randomBytes(BLOCK_SIZE));
    const block = await backupBlocks(dev, repo, { volume: 'pg', sizeBytes: BLOCK_SIZE, filesystem: 'ext4', ranges: [{ offsetBytes: 0, lengthBytes: BLOCK_SIZE }] });
    const empty = join(dir, 'empty');
    await rm(empty, { recursive: true, force: true });
    await (await import('node:fs/promises')).mkdir(empty);
    await expect(restoreTree(repo, 'pg', block.id, empty)).rejects.toMatchObject({ code: ErrorCodes.NOT_SUPPORTED, message: expect.stringMatching(/file-level/), remedies: [{ action: 'file-backup', volume: 'pg' }] });
    const tree = join(dir, 'tree');
    await (await import('node:fs/promises')).mkdir(tree);
    await writeFile(join(tree, 'a'), 'a');
    const files = await backupTree(tree, repo, { volume: 'pg' });
    expect(files.parent).toBeUndefined();
    // GC with both kinds keeps both.
    await gc(repo);
    expect(await verifyBackup(repo, 'pg', block.id)).toMatchObject({ chunks: 1 });
    expect(await verifyBackup(repo, 'pg', files.id)).toMatchObject({ files: 1 });
  });

  it('thin_dump mappings of one device become merged byte ranges', async () => {
    const xml = await readFile(new URL('../../fixtures/dm/thin-dump.xml', import.meta.url), 'utf8');
    const { blockSectors, ranges } = parseMappedRanges(xml, 0);
    const bs = blockSectors * 512;
    expect(blockSectors).toBe(128);
    // dev 0: blocks 0, 1-3, 4 merge to 0-4; 36; 128; 136; 144-160 and 161-224 merge.
    expect(ranges.slice(0, 5)).toEqual([
      { offsetBytes: 0, lengthBytes: 5 * bs }, { offsetBytes: 36 * bs, lengthBytes: bs }, { offsetBytes: 128 * bs, lengthBytes: bs },
      { offsetBytes: 136 * bs, lengthBytes: bs }, { offsetBytes: 144 * bs, lengthBytes: 81 * bs },
    ]);
    expect(() => parseMappedRanges(xml, 99)).toThrow(/device 99 is not in the dump/);
  });

  it('the control endpoint takes the kind of backup as backupKind, file or block, and names the field otherwise', () => {
    const schema = controlEndpoints.startJob.request;
    const job = { kind: 'backup-create', volume: 'pg', dest: 'vfs:///srv/backups' };
    expect(schema.parse({ ...job, backupKind: 'block' })).toMatchObject({ kind: 'backup-create', backupKind: 'block' });
    expect(schema.parse(job)).not.toHaveProperty('backupKind');
    const bad = schema.safeParse({ ...job, backupKind: 'image' });
    expect(bad.success).toBe(false);
    expect(bad.error?.issues[0]?.message).toMatch(/backupKind.*file or block/);
  });
});
