import { mkdtemp, rm } from 'node:fs/promises';
import * as realFs from 'node:fs/promises';
import { statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { asFsPort, distrust, isLocalPath, LocalFirstFs, trustIfLocal } from '../../src/core/local-fs.js';
import type { FsPort } from '../../src/core/fs-port.js';

/** statfs types the fast path takes: the machine's /tmp must be one of them for these tests. */
const LOCAL_TYPES = [0xef53, 0x58465342, 0x9123683e, 0x01021994, 0xf2f52010, 0x2fc12fc1, 0x794c7630];
const tmpIsLocal = LOCAL_TYPES.includes(Number(statfsSync(tmpdir()).type));

describe.skipIf(!tmpIsLocal)('LocalFirstFs', () => {
  let dir: string;
  let local: LocalFirstFs;
  let fs: FsPort;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'stowage-localfs-'));
    local = new LocalFirstFs();
    fs = asFsPort(local);
  });
  afterEach(async () => { await rm(dir, { recursive: true, force: true }); });

  it('takes the synchronous path only under a directory it was told is local', () => {
    expect(isLocalPath(fs, join(dir, 'a'))).toBe(false);
    expect(trustIfLocal(fs, dir)).toBe(true);
    expect(isLocalPath(fs, join(dir, 'a'))).toBe(true);
    expect(isLocalPath(fs, dir)).toBe(true);
    // A sibling whose name only starts the same, a relative path and an escape are not under it.
    expect(isLocalPath(fs, `${dir}-other/a`)).toBe(false);
    expect(isLocalPath(fs, 'relative/a')).toBe(false);
    expect(isLocalPath(fs, join(dir, 'a') + '/../../etc/passwd')).toBe(false);
    expect(isLocalPath(realFs as FsPort, join(dir, 'a'))).toBe(false);
  });

  it('refuses /proc (not a disk filesystem) and a path that does not exist', () => {
    expect(local.trustIfLocal('/proc')).toBe(false);
    expect(local.trustIfLocal(join(dir, 'missing'))).toBe(false);
    expect(isLocalPath(fs, '/proc/self/status')).toBe(false);
  });

  it('takes the thread pool under a directory distrusted or found remote below a local root (a network mount there)', async () => {
    expect(trustIfLocal(fs, dir)).toBe(true);
    distrust(fs, join(dir, 'mnt'));
    expect(isLocalPath(fs, join(dir, 'a'))).toBe(true);
    expect(isLocalPath(fs, join(dir, 'mnt'))).toBe(false);
    expect(isLocalPath(fs, join(dir, 'mnt', 'pool', 'volumes', 'v.json'))).toBe(false);
    // A deeper directory found local counts again (the longest registered directory decides).
    await realFs.mkdir(join(dir, 'mnt', 'disk'), { recursive: true });
    expect(trustIfLocal(fs, join(dir, 'mnt', 'disk'))).toBe(true);
    expect(isLocalPath(fs, join(dir, 'mnt', 'disk', 'x'))).toBe(true);
    expect(isLocalPath(fs, join(dir, 'mnt', 'other'))).toBe(false);
    // What statfs does not call local is pinned as remote, even below a local root.
    expect(trustIfLocal(fs, join(dir, 'gone'))).toBe(false);
    expect(isLocalPath(fs, join(dir, 'gone', 'x'))).toBe(false);
    expect(isLocalPath(fs, join(dir, 'b'))).toBe(true);
  });

  it('has every call of the port (the cast in asFsPort would hide a missing one)', () => {
    const calls = ['mkdir', 'readFile', 'writeFile', 'rename', 'rm', 'rmdir', 'readdir', 'stat', 'lstat',
      'open', 'chmod', 'chown', 'lchown', 'link', 'unlink', 'access', 'utimes'] as const satisfies ReadonlyArray<keyof FsPort>;
    // Keeps the list above complete: a call added to FsPort without it fails to compile here.
    const complete: Record<keyof FsPort, true> = Object.fromEntries(calls.map((c) => [c, true])) as Record<(typeof calls)[number], true>;
    for (const call of Object.keys(complete)) expect(typeof (local as unknown as Record<string, unknown>)[call], call).toBe('function');
  });

  it('answers like fs/promises, errors included', async () => {
    local.trustIfLocal(dir);
    const file = join(dir, 'f.json');
    await fs.writeFile(file, '{"a":1}');
    expect(await fs.readFile(file, 'utf8')).toBe(await realFs.readFile(file, 'utf8'));
    expect((await fs.lstat(file)).ino).toBe((await realFs.lstat(file)).ino);
    await fs.mkdir(join(dir, 'sub'), { mode: 0o700 });
    expect(await fs.readdir(dir)).toEqual((await realFs.readdir(dir)));
    await fs.link(file, join(dir, 'g.json'));
    await fs.rename(join(dir, 'g.json'), join(dir, 'h.json'));
    await fs.unlink(join(dir, 'h.json'));
    await fs.chmod(file, 0o640);
    expect((await realFs.stat(file)).mode & 0o777).toBe(0o640);
    await fs.utimes(file, 1_000_000, 1_000_000);
    expect((await realFs.stat(file)).mtimeMs).toBe(1_000_000_000);
    await fs.rmdir(join(dir, 'sub'));
    // The same error shape callers test with errnoCode.
    await expect(fs.lstat(join(dir, 'nope'))).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(fs.open(file, 'wx')).rejects.toMatchObject({ code: 'EEXIST' });
    await expect(fs.mkdir(join(dir, 'f.json'))).rejects.toMatchObject({ code: 'EEXIST' });
  });

  it('gives handles that write, read, fsync, truncate and close', async () => {
    local.trustIfLocal(dir);
    const file = join(dir, 'lock');
    const handle = await fs.open(file, 'wx', 0o600);
    await handle.writeFile('x'.repeat(10));
    await handle.write('yy', 0, 'utf8');
    await handle.truncate(4);
    await handle.sync();
    expect((await handle.stat()).size).toBe(4);
    await handle.close();
    await handle.close();
    expect(await realFs.readFile(file, 'utf8')).toBe('yyxx');
    const reader = await fs.open(file, 'r');
    const buffer = Buffer.alloc(8);
    expect((await reader.read(buffer, 0, 8, 0)).bytesRead).toBe(4);
    expect(await reader.readFile('utf8')).toBe('yyxx');
    await reader.close();
  });

  it('lets the event loop in during a long run of calls', async () => {
    local.trustIfLocal(dir);
    let ticks = 0;
    const timer = setInterval(() => { ticks += 1; }, 1);
    try {
      const started = performance.now();
      // Calls chained on one another without a real wait, as a purge of a big tree makes them.
      while (performance.now() - started < 60) await fs.lstat(dir);
    } finally {
      clearInterval(timer);
    }
    expect(ticks).toBeGreaterThan(3);
  });
});
