/**
 * openRegularOn: what the cluster-state readers, the lock renewal and the flusher open on storage
 * other machines write. On the real file system only a regular file is ever opened; a device
 * planted under the name is described, never opened (its driver would run on this host).
 */
import { spawnSync } from 'node:child_process';
import { constants } from 'node:fs';
import * as realFs from 'node:fs/promises';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { FsPort } from '../../src/core/fs-port.js';
import { asFsPort, LocalFirstFs, openRegularOn } from '../../src/core/local-fs.js';
import { memFs } from '../helpers/memfs-stack.js';

const isRoot = process.getuid?.() === 0;
const READ = constants.O_RDONLY | constants.O_NONBLOCK;

type Opened = Awaited<ReturnType<typeof openRegularOn>>;

async function textOf(opened: Opened): Promise<string> {
  if ('notRegular' in opened) throw new Error(`expected a file, got ${opened.notRegular}`);
  try {
    return String(await opened.readFile('utf8'));
  } finally {
    await opened.close();
  }
}

describe('openRegularOn on the real file system', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'stowage-open-regular-'));
    await writeFile(join(dir, 'record.json'), '{"a":1}');
    await symlink(join(dir, 'record.json'), join(dir, 'link.json'));
    await mkdir(join(dir, 'sub'));
    expect(spawnSync('mkfifo', [join(dir, 'fifo.json')]).status).toBe(0);
  });
  afterEach(async () => { await rm(dir, { recursive: true, force: true }); });

  const local = () => {
    const fs = new LocalFirstFs();
    fs.trustIfLocal(dir);
    return asFsPort(fs);
  };
  // The daemon's own port on a local directory (synchronous calls), on one it was not told is
  // local (the thread pool, as on a shared mount), and node's own fs/promises (what tests pass).
  const ports: [string, () => FsPort][] = [
    ['LocalFirstFs, local path', local],
    ['LocalFirstFs, shared path', () => asFsPort(new LocalFirstFs())],
    ['node:fs/promises', () => realFs as unknown as FsPort],
  ];

  for (const [name, port] of ports) {
    describe(name, () => {
      it('reads a regular file, refuses a symlink as ELOOP, describes a FIFO and a directory without opening them', async () => {
        expect(await textOf(await openRegularOn(port(), join(dir, 'record.json'), READ))).toBe('{"a":1}');
        await expect(openRegularOn(port(), join(dir, 'link.json'), READ)).rejects.toMatchObject({ code: 'ELOOP' });
        // A plain open of the FIFO without O_NONBLOCK would wait for a writer forever; it is never opened.
        expect(await openRegularOn(port(), join(dir, 'fifo.json'), constants.O_RDONLY)).toEqual({ notRegular: 'a FIFO' });
        expect(await openRegularOn(port(), join(dir, 'sub'), READ)).toEqual({ notRegular: 'a directory' });
        await expect(openRegularOn(port(), join(dir, 'missing.json'), READ)).rejects.toMatchObject({ code: 'ENOENT' });
      });

      it('opens for writing with the flags asked for', async () => {
        const opened = await openRegularOn(port(), join(dir, 'record.json'), constants.O_RDWR | constants.O_NOFOLLOW);
        if ('notRegular' in opened) throw new Error('expected a file');
        try {
          await opened.write('{"b":2}', 0, 'utf8');
        } finally {
          await opened.close();
        }
        expect(await readFile(join(dir, 'record.json'), 'utf8')).toBe('{"b":2}');
      });

      it.runIf(isRoot)('never opens a device planted under the name', async () => {
        // Major 240 is for local use: no driver here, so any open of it fails with ENXIO.
        expect(spawnSync('mknod', [join(dir, 'dev.json'), 'c', '240', '0']).status).toBe(0);
        expect(await openRegularOn(port(), join(dir, 'dev.json'), READ)).toEqual({ notRegular: 'a character device' });
        expect(await openRegularOn(port(), join(dir, 'dev.json'), constants.O_RDWR)).toEqual({ notRegular: 'a character device' });
        await expect(realFs.open(join(dir, 'dev.json'), READ)).rejects.toMatchObject({ code: 'ENXIO' });
      });
    });
  }
});

describe('openRegularOn on a port that is not the real file system (memfs)', () => {
  it('opens a regular file and describes a directory', async () => {
    const fs = memFs();
    await fs.mkdir('/d/sub', { recursive: true });
    await fs.writeFile('/d/record.json', 'hello');
    expect(await textOf(await openRegularOn(fs, '/d/record.json', READ))).toBe('hello');
    expect(await openRegularOn(fs, '/d/sub', READ)).toEqual({ notRegular: 'a directory' });
  });
});
