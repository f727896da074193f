import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { link, lstat, lutimes, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { EntryPathSchema, EntrySchema, type Entry } from '../../../src/core/backup/format.js';
import { ManifestWriter } from '../../../src/core/backup/manifest.js';
import { bytesFromName, fsPath, isCanonicalName, nameFromBytes } from '../../../src/core/backup/raw-names.js';
import { Repository } from '../../../src/core/backup/repository.js';
import { backupTree, restoreTree, verifyBackup } from '../../../src/core/backup/index.js';
import { ErrorCodes } from '../../../src/core/errors.js';
import { collect } from './tree-helpers.js';

const CHUNKER = { minSize: 16 * 1024, avgSize: 64 * 1024, maxSize: 256 * 1024, seed: 'test' };
const bytes = (...parts: Array<string | number[] | Buffer>) =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : Buffer.isBuffer(p) ? p : Buffer.from(p))));
/** A path under `dir` for node:fs, its last part given as bytes. */
const under = (dir: string, name: Buffer) => Buffer.concat([Buffer.from(`${dir}/`), name]);

describe('names as bytes', () => {
  it('every byte string comes back from its name as the same bytes, and the name is canonical', () => {
    const samples = [
      bytes('plain'), bytes('caf', [0xe9], '.txt'), bytes([0xff, 0xfe, 0x80]), bytes('é', [0xc3], 'x'), bytes([0xed, 0xa0, 0x80]),
      bytes([0xf4, 0x90, 0x80, 0x80]), bytes([0xe0, 0x80, 0xaf]), bytes('😀', [0xf0, 0x9f]), bytes('\ufffd real replacement'), bytes([0xc0, 0xaf]),
    ];
    for (let i = 0; i < 2000; i += 1) samples.push(randomBytes(1 + (i % 40)));
    for (const sample of samples) {
      const name = nameFromBytes(sample);
      expect(bytesFromName(name).equals(sample), sample.toString('hex')).toBe(true);
      expect(isCanonicalName(name), sample.toString('hex')).toBe(true);
    }
  });

  it('valid UTF-8 is left as the text it is, and fsPath hands it on unchanged', () => {
    for (const text of ['file.txt', 'é/😀/\ufffd', '日本語 name']) {
      expect(nameFromBytes(Buffer.from(text))).toBe(text);
      expect(fsPath(text)).toBe(text);
    }
    expect(nameFromBytes(bytes('caf', [0xe9]))).toBe('caf\udce9');
    expect(fsPath('dir/caf\udce9')).toEqual(bytes('dir/caf', [0xe9]));
  });

  it('a manifest path spelling a byte any other way is refused: no escaped ASCII, no second spelling of a character', () => {
    for (const hostile of ['\udc2f', 'a/\udc2e\udc2e/b', '\udcc3\udca9', '\ud800', 'x\udfff', '\udc41']) {
      expect(isCanonicalName(hostile), JSON.stringify(hostile)).toBe(false);
      expect(EntryPathSchema.safeParse(hostile).success, JSON.stringify(hostile)).toBe(false);
    }
    expect(EntryPathSchema.safeParse('dir/caf\udce9').success).toBe(true);
    const symlink = { path: 'l', type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtimeNs: '0', atimeNs: '0', size: 0 };
    expect(EntrySchema.safeParse({ ...symlink, target: '../\udce9' }).success).toBe(true);
    expect(EntrySchema.safeParse({ ...symlink, target: '\udc2e\udc2e/etc' }).success).toBe(false);
  });
});

describe('a backup refuses to record an entry a restore would refuse', () => {
  it('fails naming the file and the field, and writes nothing', async () => {
    let added = 0;
    const writer = new ManifestWriter({ add: async () => { added += 1; return { id: 'x' }; } } as never);
    const entry = { path: 'dir/f', type: 'file', mode: 0o644, uid: 0, gid: 0, mtimeNs: 'soon', atimeNs: '0', size: 0, chunks: [] } as Entry;
    await expect(writer.add(entry)).rejects.toMatchObject({ code: ErrorCodes.NOT_SUPPORTED, message: expect.stringMatching(/cannot back up "dir\/f": its mtimeNs is refused \(not a time in nanoseconds\)/) });
    await writer.finish();
    expect(added).toBe(0);
  });
});

interface Seen { type: string; mode: number; uid: number; gid: number; mtimeUs: bigint; sha?: string; target?: string; ino: bigint }

/** Every entry under `root`, keyed by its relative path as hex bytes, with times to the microsecond. */
async function describeRaw(root: string): Promise<Map<string, Seen>> {
  const out = new Map<string, Seen>();
  const floorUs = (ns: bigint) => ns / 1000n - (ns % 1000n < 0n ? 1n : 0n);
  const visit = async (rel: Buffer): Promise<void> => {
    const abs = rel.length === 0 ? Buffer.from(root) : Buffer.concat([Buffer.from(`${root}/`), rel]);
    const st = await lstat(abs, { bigint: true });
    const type = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'file';
    out.set(rel.toString('hex') || '.', {
      type, mode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid), mtimeUs: floorUs(st.mtimeNs), ino: st.ino,
      ...(type === 'file' ? { sha: createHash('sha256').update(await readFile(abs)).digest('hex') } : {}),
      ...(type === 'symlink' ? { target: (await readlink(abs, 'buffer')).toString('hex') } : {}),
    });
    if (type === 'dir') {
      for (const name of await readdir(abs, { encoding: 'buffer' })) await visit(rel.length === 0 ? name : Buffer.concat([rel, Buffer.from('/'), name]));
    }
  };
  await visit(Buffer.alloc(0));
  return out;
}
const withoutInodes = (m: Map<string, Seen>) => new Map([...m].map(([k, { ino: _ino, ...rest }]) => [k, rest]));

describe('names that are not UTF-8, and times before 1970, round-trip', () => {
  let base = '';
  let repo: Repository;
  let src = '';
  const latin1Dir = bytes('r', [0xe9], 'pertoire');
  const latin1File = bytes('caf', [0xe9], '.txt');
  const cutEmoji = bytes('emoji-', [0xf0, 0x9f, 0x98], '-cut');

  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-raw-'));
    repo = await Repository.init(new VfsBlobStore(join(base, 'repo'), { durable: false }), { chunker: CHUNKER, packSize: 1024 * 1024 });
    src = join(base, 'src');
    await mkdir(src);
    // Beside each other in one directory: a latin1 name, the same word in UTF-8, and U+FFFD itself.
    await writeFile(under(src, latin1File), 'latin1 name\n');
    await writeFile(join(src, 'café.txt'), 'utf-8 name\n');
    await writeFile(join(src, 'caf\ufffd.txt'), 'a real replacement character\n');
    await writeFile(under(src, cutEmoji), randomBytes(300 * 1024));
    await mkdir(under(src, latin1Dir));
    const inDir = Buffer.concat([Buffer.from(`${src}/`), latin1Dir, Buffer.from('/'), latin1File]);
    await writeFile(inDir, 'inside\n');
    await link(inDir, under(src, bytes('hard-', [0xe9])));
    await symlink(bytes([0xe9], '/../', latin1File), under(src, bytes('link-', [0xff])));
    await writeFile(join(src, 'old'), 'before 1970\n');
    await utimes(join(src, 'old'), new Date('1969-07-20T20:17:40.123Z'), new Date('1960-01-01T00:00:00.5Z'));
    // Nanoseconds before the epoch; a symlink's and a directory's own times too.
    execFileSync('touch', ['-h', '-d', '1965-06-01 12:00:00.000001001 UTC', join(src, 'old')]);
    await lutimes(under(src, bytes('link-', [0xff])), new Date('1950-01-01T00:00:00.25Z'), new Date('1950-01-01T00:00:00.25Z'));
    execFileSync('touch', ['-d', '1969-12-31 23:59:59.999999 UTC', join(src, 'café.txt')]);
    await utimes(under(src, latin1Dir), new Date('1940-01-01T00:00:00.75Z'), new Date('1940-01-01T00:00:00.75Z'));
  });
  afterAll(async () => { await rm(base, { recursive: true, force: true }); });

  it('every name, link target and time comes back as it was, on both write paths; the files cache knows them next time', async () => {
    const warnings: string[] = [];
    const record = await backupTree(src, repo, { volume: 'raw', onWarning: (w) => warnings.push(w) });
    expect(warnings).toEqual([]);
    expect(record.stats).toMatchObject({ entries: 10, files: 6, skipped: 0 });
    const paths = (await collect(repo, record)).entries.map((e) => e.path);
    expect(paths).toContain('caf\udce9.txt');
    expect(paths).toContain('caf\ufffd.txt');
    const want = withoutInodes(await describeRaw(src));
    expect(want.get(Buffer.from('old').toString('hex'))!.mtimeUs).toBeLessThan(0n);
    for (const localFastPath of [true, false]) {
      const out = join(base, `out-${localFastPath}`);
      await mkdir(out);
      await restoreTree(repo, 'raw', record.id, out, { localFastPath });
      const got = await describeRaw(out);
      expect(withoutInodes(got), `localFastPath ${localFastPath}`).toEqual(want);
      const hard = got.get(bytes('hard-', [0xe9]).toString('hex'))!;
      expect(hard.ino).toBe(got.get(Buffer.concat([latin1Dir, Buffer.from('/'), latin1File]).toString('hex'))!.ino);
    }
    expect(await verifyBackup(repo, 'raw', record.id)).toMatchObject({ files: 6 });
    const again = await backupTree(src, repo, { volume: 'raw' });
    expect(again.stats).toMatchObject({ files: 6, filesRead: 0 });
  });
});
