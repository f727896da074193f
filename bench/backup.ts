/**
 * Backup benchmark (standalone for now: `npx tsx bench/backup.ts`): builds a tree of mixed
 * files (a few large ones, half incompressible, and BENCH_BACKUP_SMALL small text files), then
 * times, on the same disk and with warm caches, `tar -c` and `tar -cz` of it against a full
 * backup into a vfs repository, an incremental backup after changing ~1% of the data, a second
 * volume with the same data, and a restore against `tar -x`. Prints ratios and the issue's
 * targets; peak RSS is sampled during the full backup.
 * Knobs: BENCH_BACKUP_MIB [256] (size of the large files together), BENCH_BACKUP_SMALL [10000],
 * BENCH_BACKUP_DIR [a temp dir under /var/tmp], BENCH_BACKUP_CODEC [brotli-0].
 */
import { createCipheriv, createHash } from 'node:crypto';
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { VfsBlobStore } from '../src/backup-targets/vfs/vfs-blob-store.js';
import { CodecSchema } from '../src/core/backup/codec.js';
import { Repository } from '../src/core/backup/repository.js';
import { backupTree, restoreTree } from '../src/core/backup/tree.js';
import { envInt, timed } from './util.js';

const MiB = 1024 * 1024;
const largeMiB = envInt('BENCH_BACKUP_MIB', 256);
const smallCount = envInt('BENCH_BACKUP_SMALL', 10_000);
const codec = CodecSchema.parse(process.env.BENCH_BACKUP_CODEC ?? 'brotli-0');

function pseudoRandom(size: number, seed: string): Buffer {
  return createCipheriv('aes-256-ctr', createHash('sha256').update(seed).digest(), Buffer.alloc(16)).update(Buffer.alloc(size));
}

function textLike(size: number, seed: number): Buffer {
  const lines: string[] = [];
  let n = 0;
  for (let i = 0; n < size; i += 1) {
    const line = `${seed}:${i} INFO request id=${(i * 2654435761) % 1_000_003} path=/api/v1/items/${i % 977} status=${200 + (i % 5)} took=${i % 113}ms\n`;
    lines.push(line);
    n += line.length;
  }
  return Buffer.from(lines.join('')).subarray(0, size);
}

async function makeTree(dir: string): Promise<number> {
  let bytes = 0;
  await mkdir(join(dir, 'large'), { recursive: true });
  const files = Math.max(1, Math.round(largeMiB / 32));
  for (let f = 0; f < files; f += 1) {
    const handle = await open(join(dir, 'large', `file${f}.bin`), 'w');
    for (let m = 0; m < 32; m += 1) {
      const block = m % 2 === 0 ? pseudoRandom(MiB, `${f}:${m}`) : textLike(MiB, f * 100 + m);
      await handle.write(block);
      bytes += block.length;
    }
    await handle.close();
  }
  for (let i = 0; i < smallCount; i += 1) {
    const sub = join(dir, 'small', `d${i % 100}`);
    if (i < 100) await mkdir(sub, { recursive: true });
    const data = textLike(1000 + ((i * 7919) % 12_000), i);
    await writeFile(join(sub, `f${i}.txt`), data);
    bytes += data.length;
  }
  return bytes;
}

async function tarRate(dir: string, gzip: boolean): Promise<number> {
  const { ms } = await timed(async () => {
    await execa('tar', [gzip ? '-czf' : '-cf', '-', '-C', dir, '.'], { buffer: false }).pipe('wc', ['-c']);
  });
  return ms;
}

const rate = (bytes: number, ms: number) => `${(bytes / MiB / (ms / 1000)).toFixed(0)} MiB/s`;

async function main(): Promise<void> {
  const base = process.env.BENCH_BACKUP_DIR ?? await mkdtemp('/var/tmp/stowage-bench-backup-');
  try {
    const src = join(base, 'src');
    const bytes = await makeTree(src);
    console.log(`tree: ${(bytes / MiB).toFixed(0)} MiB, ${smallCount} small files, codec ${codec}`);
    await tarRate(src, false); // warm the page cache for every contender
    const tarMs = await tarRate(src, false);
    const tarGzMs = await tarRate(src, true);
    const store = new VfsBlobStore(join(base, 'repo'));
    const repo = await Repository.init(store, { codec });
    let peakRss = 0;
    const sampler = setInterval(() => { peakRss = Math.max(peakRss, process.memoryUsage().rss); }, 50);
    const full = await timed(() => backupTree(src, repo, { volume: 'bench', parent: false }));
    clearInterval(sampler);
    // ~1%: rewrite 1% of every large file in place (spread out) and 1% of the small files.
    const change = Math.max(1, Math.round(largeMiB / 32));
    for (let f = 0; f < change; f += 1) {
      const handle = await open(join(src, 'large', `file${f}.bin`), 'r+');
      await handle.write(pseudoRandom(Math.round(0.01 * 32 * MiB), `edit${f}`), 0, undefined, 7 * MiB);
      await handle.close();
    }
    for (let i = 0; i < smallCount; i += 100) await writeFile(join(src, 'small', `d${i % 100}`, `f${i}.txt`), textLike(3000, -i));
    const incr = await timed(() => backupTree(src, repo, { volume: 'bench' }));
    await execa('cp', ['-a', src, join(base, 'copy')]);
    const second = await timed(() => backupTree(join(base, 'copy'), repo, { volume: 'bench-copy' }));
    await execa('tar', ['-cf', join(base, 'tree.tar'), '-C', src, '.']);
    await mkdir(join(base, 'untar'));
    const untar = await timed(() => execa('tar', ['-xf', join(base, 'tree.tar'), '-C', join(base, 'untar')]));
    await mkdir(join(base, 'restore'));
    const restore = await timed(() => restoreTree(repo, 'bench', incr.result.id, join(base, 'restore')));
    const f = full.result.stats;
    console.log(`tar -c:        ${rate(bytes, tarMs)}`);
    console.log(`tar -cz:       ${rate(bytes, tarGzMs)}`);
    console.log(`full backup:   ${rate(bytes, full.ms)}  (${(full.ms / 1000).toFixed(1)} s, stored ${(f.newStoredBytes / MiB).toFixed(0)} MiB, peak RSS ${(peakRss / MiB).toFixed(0)} MiB)`);
    console.log(`  vs tar -c:   ${(tarMs / full.ms).toFixed(2)}x (target >= 0.8)   vs tar -cz: ${(tarGzMs / full.ms).toFixed(2)}x (target > 1)`);
    console.log(`incremental:   ${(incr.ms / 1000).toFixed(2)} s = ${(100 * incr.ms / full.ms).toFixed(1)}% of the full backup's time (target <= 20%), wrote ${(100 * incr.result.stats.newStoredBytes / f.newStoredBytes).toFixed(2)}% of its bytes (target <= 5%), read ${incr.result.stats.filesRead} files`);
    console.log(`second volume: added ${(100 * second.result.stats.newStoredBytes / bytes).toFixed(2)}% of its size (target <= 2%)`);
    console.log(`restore:       ${rate(bytes, restore.ms)} vs tar -x ${rate(bytes, untar.ms)}: ${(untar.ms / restore.ms).toFixed(2)}x (target >= 0.8)`);
  } finally {
    if (!process.env.BENCH_BACKUP_DIR) await rm(base, { recursive: true, force: true });
  }
}

await main();
