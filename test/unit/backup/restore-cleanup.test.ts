/** A restore that fails removes everything it wrote, whatever bytes the names hold. */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { packKey } from '../../../src/core/backup/format.js';
import { Repository } from '../../../src/core/backup/repository.js';
import { backupTree, restoreTree } from '../../../src/core/backup/index.js';
import { ErrorCodes } from '../../../src/core/errors.js';
import { collect } from './tree-helpers.js';

const CHUNKER = { minSize: 16 * 1024, avgSize: 64 * 1024, maxSize: 256 * 1024, seed: 'test' };

describe('a failed restore leaves its target empty', () => {
  let base = '';
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-restore-cleanup-'));
  });
  afterAll(async () => {
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('also of what it wrote under a name that is not UTF-8', async () => {
    const src = join(base, 'src');
    await mkdir(src);
    await writeFile(Buffer.concat([Buffer.from(`${src}/`), Buffer.of(0xff)]), 'raw name');
    // U+FF5A sorts after the escaped 0xff: the raw name is restored before the corrupt chunk is met.
    await writeFile(join(src, '\uff5a.bin'), randomBytes(300_000));
    const store = new VfsBlobStore(join(base, 'repo'), { durable: false });
    const repo = await Repository.init(store, { chunker: CHUNKER });
    const record = await backupTree(src, repo, { volume: 'raw' });
    const { entries } = await collect(repo, record);
    expect(entries.map((e) => e.path)).toEqual(['.', '\udcff', '\uff5a.bin']);
    const victim = entries.at(-1)!.chunks![0]!;
    const loc = repo.locate(victim)!;
    const pack = join(store.location, packKey(loc.pack));
    const bytes = await readFile(pack);
    bytes[loc.offset + 7] ^= 0x55;
    await writeFile(pack, bytes);
    const out = join(base, 'out');
    await mkdir(out);
    await expect(restoreTree(await Repository.open(store), 'raw', record.id, out)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT });
    expect(await readdir(out, { encoding: 'buffer' })).toEqual([]);
  });
});
