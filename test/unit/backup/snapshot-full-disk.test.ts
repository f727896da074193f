/**
 * A vfs snapshot is a backup into a repository on the volumes' own disk: one that fails for want
 * of space must give back what it stored, or the disk the volumes live on stays full of chunks
 * no snapshot references. Real vfs stack on a small tmpfs.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, statfs, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../../src/core/errors.js';
import { findExecutable, systemSuite } from '../../helpers/requirements.js';
import { startPluginServer, type PluginServer } from '../../helpers/plugin-server.js';

const isRoot = process.getuid?.() === 0;
const noTmpfs = systemSuite('tmpfs mounts', isRoot && findExecutable('mount') ? { ok: true } : { ok: false, why: 'needs root to mount a small tmpfs' });

const MiB = 1024 * 1024;

describe.skipIf(noTmpfs)('a vfs snapshot that runs out of space', () => {
  let base: string;
  let server: PluginServer | undefined;
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-snap-full-'));
    await mkdir(join(base, 'vols'));
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=24M', 'tmpfs', join(base, 'vols')]);
  });
  afterAll(async () => {
    await server?.close();
    await execa('umount', ['-l', join(base, 'vols')]).catch(() => undefined);
    await rm(base, { recursive: true, force: true });
  });

  const freeBytes = async () => {
    const { bavail, bsize } = await statfs(join(base, 'vols'));
    return bavail * bsize;
  };

  it('fails with E_STORAGE_FULL and gives back the space it took; a smaller snapshot then works', async () => {
    server = await startPluginServer(base);
    const { manager } = server;
    await manager.create('db');
    const path = await manager.mount('db', 'writer');
    // Incompressible, more than the space left after it: the snapshot cannot hold a copy.
    await writeFile(join(path, 'data.bin'), randomBytes(14 * MiB));
    await manager.unmount('db', 'writer');
    const before = await freeBytes();
    expect(before).toBeLessThan(14 * MiB);
    await expect(manager.createSnapshot('db', 'first')).rejects.toMatchObject({
      code: ErrorCodes.STORAGE_FULL, message: expect.stringMatching(/^snapshot first of volume db does not fit: .*full \(no space left on device \(ENOSPC\)\); what it had stored was freed again/),
    });
    // The repository's own files (config, space reserve) stay; the chunks it wrote do not.
    expect(before - await freeBytes()).toBeLessThan(2 * MiB);
    expect(await manager.listSnapshots('db')).toEqual([]);

    // With the data made smaller, a snapshot fits and is taken.
    const again = await manager.mount('db', 'writer');
    await writeFile(join(again, 'data.bin'), randomBytes(3 * MiB));
    await manager.unmount('db', 'writer');
    await expect(manager.createSnapshot('db', 'second')).resolves.toMatchObject({ name: 'second', volume: 'db' });
  });
});
