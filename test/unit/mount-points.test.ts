/**
 * Mount points are told by the mount table, not by device numbers alone: a bind mount of a
 * directory of the same filesystem shows the store's device, and deleting through it deletes
 * wherever it came from. The table is read through the FsPort, so memfs stands in for /proc here
 * (test/backends/vfs-hostile-store.test.ts does it with real bind mounts, as root). The real
 * filesystem is walked through descriptors, which the last tests here take without root.
 */
import { createFsFromVolume, Volume } from 'memfs';
import { spawnSync } from 'node:child_process';
import * as nodeFs from 'node:fs/promises';
import { lstat, mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ExecaCommandRunner } from '../../src/core/command-runner.js';
import { createRequest } from '../../src/core/create-request.js';
import { ErrorCodes } from '../../src/core/errors.js';
import type { FsPort } from '../../src/core/fs-port.js';
import { MOUNTINFO_PATH, MountPointsBelow } from '../../src/core/mount-points.js';
import { mountPointsWithin, parseMountinfo } from '../../src/core/proc-mounts.js';
import { removeTreeOnDevice } from '../../src/core/safe-path.js';
import { VfsBackend } from '../../src/backends/vfs/vfs-backend.js';
import { parseVfsOptions } from '../../src/backends/vfs/vfs-options.js';
import { memoryLogger } from '../helpers/memory-logger.js';

function memFs(): FsPort {
  return createFsFromVolume(new Volume()).promises as unknown as FsPort;
}

/** One mountinfo line; `at` as the kernel writes it (octal escapes). */
const line = (id: number, at: string, root = '/', fstype = 'ext4') => `${id} 1 254:0 ${root} ${at} rw,relatime - ${fstype} /dev/vda rw`;

async function withMounts(fs: FsPort, ...lines: string[]): Promise<void> {
  await fs.mkdir('/proc/self', { recursive: true });
  await fs.writeFile(MOUNTINFO_PATH, [line(1, '/'), ...lines].join('\n') + '\n');
}

describe('mountPointsWithin', () => {
  it('lists the mount points at and below a directory, relative to it, and nothing beside it', () => {
    const entries = parseMountinfo([
      line(1, '/'), line(2, '/s/vol', '/elsewhere'), line(3, '/s/vol/a\\040b'), line(4, '/s/vol2'), line(5, '/s/vol/a\\040b'), line(6, '/s'),
    ].join('\n'));
    expect([...mountPointsWithin(entries, '/s/vol')].sort()).toEqual(['', '/a b']);
    expect([...mountPointsWithin(entries, '/')].sort()).toEqual(['', '/s', '/s/vol', '/s/vol/a b', '/s/vol2']);
  });
});

describe('MountPointsBelow', () => {
  it('tells a mount point below a directory from a plain directory, escaped and non-UTF-8 names included', async () => {
    const fs = memFs();
    await withMounts(fs, line(2, '/store/vol/deep/mnt'), line(3, '/store/vol/with\\040space'), line(4, '/store/vol/caf\\351'), line(5, '/store/vol2'));
    const mounts = await MountPointsBelow.read(fs, '/store/vol');
    expect(mounts.at('/store/vol/deep/mnt')).toBe(true);
    expect(mounts.at('/store/vol/with space')).toBe(true);
    expect(mounts.at(Buffer.from('/store/vol/caf\xe9', 'latin1'))).toBe(true);
    expect(mounts.at('/store/vol/café')).toBe(false);
    expect(mounts.at('/store/vol/deep')).toBe(false);
    expect(mounts.at('/store/vol')).toBe(false);
    expect(mounts.at('/store/vol2')).toBe(false);
    expect((await MountPointsBelow.read(fs, '/store/vol/deep/mnt')).at('/store/vol/deep/mnt')).toBe(true);
  });

  it('knows no mount point where there is no mount table (only devices tell then), and fails where it cannot read one', async () => {
    const fs = memFs();
    expect((await MountPointsBelow.read(fs, '/store')).at('/store')).toBe(false);
    const unreadable = { ...fs, readFile: () => Promise.reject(Object.assign(new Error('EACCES'), { code: 'EACCES' })) } as FsPort;
    await expect(MountPointsBelow.read(unreadable, '/store')).rejects.toThrow('EACCES');
  });
});

describe('removeTreeOnDevice and the mount table', () => {
  async function tree(fs: FsPort): Promise<number> {
    await fs.mkdir('/d/gone/deep/mnt/inside', { recursive: true });
    await fs.writeFile('/d/gone/own', 'x');
    await fs.writeFile('/d/gone/deep/own', 'x');
    await fs.writeFile('/d/gone/deep/mnt/inside/f', 'not ours');
    await fs.writeFile('/d/gone/file-mount', 'not ours either');
    return (await fs.lstat('/d/gone')).dev;
  }

  it('leaves a listed mount point and all beneath it, deletes the rest, and reports it as a bind mount', async () => {
    const fs = memFs();
    const dev = await tree(fs);
    await withMounts(fs, line(2, '/d/gone/deep/mnt', '/elsewhere'), line(3, '/d/gone/file-mount', '/some/file'));
    expect(await removeTreeOnDevice(fs, '/d/gone', dev)).toEqual([
      { path: '/d/gone/deep/mnt', kind: 'bind' }, { path: '/d/gone/file-mount', kind: 'bind' },
    ]);
    expect(await fs.readFile('/d/gone/deep/mnt/inside/f', 'utf8')).toBe('not ours');
    expect(await fs.readFile('/d/gone/file-mount', 'utf8')).toBe('not ours either');
    expect((await fs.readdir('/d/gone')).sort()).toEqual(['deep', 'file-mount']);
    expect(await fs.readdir('/d/gone/deep')).toEqual(['mnt']);
  });

  it('leaves the tree whole when its top is a mount point', async () => {
    const fs = memFs();
    const dev = await tree(fs);
    await withMounts(fs, line(2, '/d/gone'));
    expect(await removeTreeOnDevice(fs, '/d/gone', dev)).toEqual([{ path: '/d/gone', kind: 'bind' }]);
    expect(await fs.readFile('/d/gone/own', 'utf8')).toBe('x');
  });

  it('deletes nothing when the mount table exists but cannot be read', async () => {
    const fs = memFs();
    const dev = await tree(fs);
    const unreadable = { ...fs, readFile: () => Promise.reject(Object.assign(new Error('EMFILE'), { code: 'EMFILE' })) } as FsPort;
    await expect(removeTreeOnDevice(unreadable, '/d/gone', dev)).rejects.toThrow('EMFILE');
    expect(await fs.readFile('/d/gone/deep/own', 'utf8')).toBe('x');
  });
});

describe('vfs and mount points in its store', () => {
  const request = (name: string) => createRequest(name, {}, { createdAt: '2026-01-01T00:00:00.000Z', createdBy: 'node-a' });
  const make = (fs: FsPort, log = memoryLogger()) => new VfsBackend({ nodeId: 'node-a', root: '/state', fs, runner: new ExecaCommandRunner(), log },
    parseVfsOptions({}, '/state'));

  it('a removed volume\'s background delete leaves a bind mount inside it, says what is left and what to do, and finishes at a start after the unmount', async () => {
    const fs = memFs();
    const log = memoryLogger();
    const setup = make(fs);
    await setup.init();
    await setup.create(request('vol'));
    const data = await setup.attach('vol');
    await fs.mkdir(join(data, 'mnt'));
    await fs.writeFile(join(data, 'mnt', 'p'), 'elsewhere\'s');
    await fs.writeFile(join(data, 'own'), 'the volume\'s');
    await setup.dispose();
    const held = { ...fs, rename: async (from: string, to: string) => {
      await fs.rename(from, to);
      // What the kernel does: the mount moves with the directory it is in.
      if (from === data) await withMounts(fs, line(2, join(to, 'mnt'), '/elsewhere'));
    } } as FsPort;
    const c = make(held, log);
    await c.init();
    await c.remove('vol', { retain: false });
    await c.settle();
    const [left] = await fs.readdir('/state/volumes/.stowage/deleting') as string[];
    const leftDir = join('/state/volumes/.stowage/deleting', left!);
    expect(await fs.readdir(leftDir)).toEqual(['mnt']);
    expect(await fs.readFile(join(leftDir, 'mnt', 'p'), 'utf8')).toBe('elsewhere\'s');
    expect(log.lines.join('\n')).toContain(`left ${leftDir}/mnt in place: it is a bind mount`);
    expect(log.lines.join('\n')).toContain(`${leftDir} stays around it: unmount it and restart to finish`);

    await withMounts(fs);
    const restarted = make(fs);
    await restarted.init();
    await restarted.settle();
    expect(await fs.readdir('/state/volumes/.stowage/deleting')).toEqual([]);
  });

  it('refuses to adopt a directory the mount table lists, and to remove a volume whose directory is listed, changing nothing', async () => {
    const fs = memFs();
    const b = make(fs);
    await b.init();
    await fs.mkdir('/state/volumes/taken');
    await fs.writeFile('/state/volumes/taken/p', 'elsewhere\'s');
    await withMounts(fs, line(2, '/state/volumes/taken', '/elsewhere'));
    await expect(b.create({ ...request('taken'), adopt: true })).rejects.toMatchObject({
      code: ErrorCodes.DATA_CONFLICT, message: expect.stringContaining('/state/volumes/taken is a mount point'),
    });
    await b.create(request('vol'));
    await withMounts(fs, line(2, '/state/volumes/vol', '/elsewhere'));
    await expect(b.remove('vol', { retain: false })).rejects.toMatchObject({
      code: ErrorCodes.DATA_CONFLICT, message: expect.stringContaining('/state/volumes/vol is a mount point'),
    });
    expect((await b.list()).map((v) => v.name)).toEqual(['vol']);
    expect(await fs.readdir('/state/volumes/.stowage/journal')).toEqual([]);
  });
});

describe('removeTreeOnDevice on the real filesystem (through directory descriptors)', () => {
  it('deletes a tree deeper than a path the kernel takes, names that are not UTF-8 included, removing symlinks as links', async () => {
    const base = await mkdtemp(join(tmpdir(), 'stowage-fdwalk-'));
    try {
      const gone = join(base, 'gone');
      await mkdir(join(base, 'outside'));
      await writeFile(join(base, 'outside', 'keep'), 'outside');
      // Built by a shell that descends step by step: no absolute path this deep can be named in one call.
      const built = spawnSync('sh', ['-c', `mkdir "$0" && cd "$0" && ln -s ../outside out && printf x > "$(printf 'caf\\351')" &&
        for i in $(seq 400); do mkdir dddddddddddddddddddd && cd -P dddddddddddddddddddd && printf x > f && ln -s ../../outside/keep l || exit 1; done`, gone]);
      expect(built.status).toBe(0);
      expect(await removeTreeOnDevice(nodeFs, gone, (await lstat(gone)).dev)).toEqual([]);
      await expect(lstat(gone)).rejects.toMatchObject({ code: 'ENOENT' });
      expect(await readFile(join(base, 'outside', 'keep'), 'utf8')).toBe('outside');
    } finally {
      // Not fs.rm: it names each file by its whole path, and fails on a tree this deep.
      spawnSync('rm', ['-rf', base]);
    }
  });
});
