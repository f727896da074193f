/**
 * The block-backup benchmark (README "Benchmarks"), run in the test VM only when asked:
 *   STOWAGE_VM_BENCH=1 STOWAGE_VM_FILTER=block-bench npx vitest run test/backends/devicemapper-vm.test.ts
 * A 1 GiB devicemapper volume filled through its ext4 with about 900 MiB of incompressible
 * files, backed up block by block; then 1% of its data blocks rewritten in place (4 KiB in each,
 * spread over every file) and backed up again. Target (issue 14): the incremental reads and
 * writes at most 3% of the full backup's bytes. A file-level backup of the same two states is
 * measured alongside (it reads every file whose mtime changed, whole). Figures go to the console
 * and to $STOWAGE_VM_WORK/block-bench.json.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createStowage } from '../../../src/drivers/api/create-stowage.js';
import { destroyPool, makePoolFiles, MiB, type PoolFixture } from './dm-harness.js';

const VOLUME_MIB = Number(process.env.STOWAGE_BENCH_VOLUME_MIB ?? 1024);
const FILE_MIB = 64;
const FILES = Math.floor((VOLUME_MIB * 0.88) / FILE_MIB);
const BLOCK = 2 * MiB;

let fx: PoolFixture | undefined;
afterAll(async () => {
  if (fx) await destroyPool(fx);
});

describe('block-backup benchmark', () => {
  it(`1 GiB volume, 1% of its data blocks changed: the incremental reads and writes at most 3% of the full's bytes`, async () => {
    fx = await makePoolFiles({ dataMiB: VOLUME_MIB + 256, metaMiB: 64, volumeSize: `${VOLUME_MIB}M` });
    const dm = await createStowage({ backend: 'devicemapper', options: fx.options, root: fx.root, nodeId: 'vm-node' });
    const figures: Record<string, unknown> = { volumeMiB: VOLUME_MIB, files: FILES, fileMiB: FILE_MIB };
    try {
      await dm.create('bench');
      const live = await dm.mount('bench', 'writer');
      await mkdir(join(live, 'data'));
      // Incompressible, and every 2 MiB block unique (its first bytes carry its number): no dedup, no compression.
      const base = randomBytes(BLOCK);
      const start = performance.now();
      for (let f = 0; f < FILES; f += 1) {
        const handle = await open(join(live, 'data', `f${f}.bin`), 'w');
        for (let b = 0; b < FILE_MIB / 2; b += 1) {
          base.writeUInt32BE(f, 0);
          base.writeUInt32BE(b, 4);
          await handle.write(base, 0, BLOCK, b * BLOCK);
        }
        await handle.close();
      }
      for (let i = 0; i < 200; i += 1) await writeFile(join(live, `small-${i}.txt`), `small file ${i}\n`.repeat(50));
      figures.fillSeconds = (performance.now() - start) / 1000;
      const dest = `vfs://${join(fx.dir, 'backups')}`;
      const fileDest = `vfs://${join(fx.dir, 'file-backups')}`;

      let t = performance.now();
      const full = await dm.createBackup('bench', { dest, kind: 'block' });
      figures.fullSeconds = (performance.now() - t) / 1000;
      t = performance.now();
      const fileFull = await dm.createBackup('bench', { dest: fileDest, kind: 'file' });
      figures.fileFullSeconds = (performance.now() - t) / 1000;

      // 1% of the data blocks: 4 KiB rewritten in each, spread over every file, synced.
      const dataBlocks = Math.round(full.stats!.bytes / BLOCK);
      const changes = Math.ceil(dataBlocks * 0.01);
      figures.dataBlocks = dataBlocks;
      figures.changedBlocks = changes;
      for (let i = 0; i < changes; i += 1) {
        const handle = await open(join(live, 'data', `f${i % FILES}.bin`), 'r+');
        const block = (Math.floor(i / FILES) * 7 + 3) % (FILE_MIB / 2);
        await handle.write(randomBytes(4096), 0, 4096, block * BLOCK + 8192);
        await handle.sync();
        await handle.close();
      }

      t = performance.now();
      const incr = await dm.createBackup('bench', { dest, kind: 'block' });
      figures.incrementalSeconds = (performance.now() - t) / 1000;
      t = performance.now();
      const fileIncr = await dm.createBackup('bench', { dest: fileDest, kind: 'file' });
      figures.fileIncrementalSeconds = (performance.now() - t) / 1000;

      const pick = (s: NonNullable<typeof full.stats>) => ({ bytesRead: s.bytesRead, newStoredBytes: s.newStoredBytes, bytes: s.bytes });
      Object.assign(figures, {
        full: pick(full.stats!), incremental: pick(incr.stats!), fileFull: pick(fileFull.stats!), fileIncremental: pick(fileIncr.stats!),
        readRatio: incr.stats!.bytesRead / full.stats!.bytesRead,
        writeRatio: incr.stats!.newStoredBytes / full.stats!.newStoredBytes,
        fileReadRatio: fileIncr.stats!.bytesRead / fileFull.stats!.bytesRead,
        fileWriteRatio: fileIncr.stats!.newStoredBytes / fileFull.stats!.newStoredBytes,
      });
      console.log(`BLOCK-BENCH ${JSON.stringify(figures)}`);
      if (process.env.STOWAGE_VM_WORK) await writeFile(join(process.env.STOWAGE_VM_WORK, 'block-bench.json'), JSON.stringify(figures, null, 2));
      expect(incr.notes?.join(' ')).toMatch(/incremental/);
      expect(figures.readRatio).toBeLessThanOrEqual(0.03);
      expect(figures.writeRatio).toBeLessThanOrEqual(0.03);
      await dm.unmount('bench', 'writer');
    } finally {
      await dm.close();
    }
  }, 3_600_000);
});
