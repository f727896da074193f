/** Thin snapshots on a real kernel: content frozen while the origin diverges, thin_delta, retain. */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../../src/core/errors.js';
import { parsePoolStatus } from '../../../src/backends/devicemapper/status-parser.js';
import { destroyPool, makeBackend, makePoolFiles, sh, teardownPool, type PoolFixture } from './dm-harness.js';
import { createRequest } from '../../../src/core/create-request.js';

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const request = (name: string) => createRequest(name, {}, { createdAt: new Date().toISOString(), createdBy: 'vm-node' });

async function writeSynced(path: string, data: Buffer | string): Promise<void> {
  const handle = await open(path, 'w');
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

let fx: PoolFixture | undefined;
afterEach(async () => {
  if (fx) await destroyPool(fx);
  fx = undefined;
});

describe('devicemapper snapshots on a real kernel', () => {
  it('a snapshot of a mounted volume keeps its content while the origin diverges; thin_delta finds the changes', async () => {
    fx = await makePoolFiles({ volumeSize: '32M' });
    const backend = makeBackend(fx);
    await backend.init();
    await backend.create(request('origin'));
    const live = await backend.attach('origin');
    const blob = randomBytes(1024 * 1024);
    await writeSynced(join(live, 'blob'), blob);
    await writeSynced(join(live, 'marker'), 'before');

    const s1 = await backend.snapshots.createSnapshot('origin', 's1');
    expect(s1).toMatchObject({ name: 's1', volume: 'origin', details: { pool: fx.poolName } });
    await writeSynced(join(live, 'marker'), 'after');
    await writeSynced(join(live, 'grown'), randomBytes(2 * 1024 * 1024));
    await backend.snapshots.createSnapshot('origin', 's2');
    await expect(backend.snapshots.createSnapshot('origin', 's1')).rejects.toMatchObject({ code: ErrorCodes.SNAPSHOT_EXISTS });
    expect((await backend.snapshots.listSnapshots('origin')).map((s) => s.name)).toEqual(['s1', 's2']);

    const device = await backend.snapshots.activateSnapshot('origin', 's1');
    const view = join(fx.dir, 'view-s1');
    await mkdir(view);
    await execa('mount', ['-t', 'ext4', '-o', 'ro,noload', device, view]);
    try {
      expect(await readFile(join(view, 'marker'), 'utf8')).toBe('before');
      expect(sha(await readFile(join(view, 'blob')))).toBe(sha(blob));
      expect(await readdir(view)).not.toContain('grown');
    } finally {
      await execa('umount', [view]);
    }
    expect(await readFile(join(live, 'marker'), 'utf8')).toBe('after');

    const changes = await backend.snapshots.changedBlocks('origin', 's1', 's2');
    expect(changes.blockSizeBytes).toBe(64 * 1024);
    const changedBytes = changes.ranges.reduce((sum, r) => sum + r.lengthBytes, 0);
    expect(changedBytes).toBeGreaterThanOrEqual(2 * 1024 * 1024);
    expect(changedBytes).toBeLessThan(32 * 1024 * 1024);
    const unchanged = await backend.snapshots.changedBlocks('origin', 's2');
    expect(unchanged.delta.ranges.length).toBeGreaterThan(0);
    const status = parsePoolStatus(await sh('dmsetup', ['status', fx.poolName]));
    expect(status.failed === false && status.heldMetadataRoot).toBeUndefined();

    await backend.snapshots.deactivateSnapshot('origin', 's1');
    await backend.snapshots.deleteSnapshot('origin', 's1');
    await expect(backend.snapshots.deleteSnapshot('origin', 's1')).rejects.toMatchObject({ code: ErrorCodes.SNAPSHOT_NOT_FOUND });
    expect((await backend.snapshots.listSnapshots('origin')).map((s) => s.name)).toEqual(['s2']);
    await backend.detach('origin');
    await backend.remove('origin', { retain: false });
    expect(parsePoolStatus(await sh('dmsetup', ['status', fx.poolName]))).toMatchObject({ usedDataBlocks: 0 });
  });

  it('retained data stays mounted read-only outside the namespace, also after a reboot', async () => {
    fx = await makePoolFiles();
    const backend = makeBackend(fx);
    await backend.init();
    await backend.create(request('kept'));
    await writeFile(join(await backend.attach('kept'), 'note'), 'still here');
    await backend.detach('kept');
    const { retainedAt } = await backend.remove('kept', { retain: true });
    expect(retainedAt).toContain(join(fx.root, 'devicemapper', 'removed', 'kept@'));
    expect(await readFile(join(retainedAt!, 'note'), 'utf8')).toBe('still here');
    await expect(writeFile(join(retainedAt!, 'other'), 'x')).rejects.toMatchObject({ code: 'EROFS' });
    await backend.dispose();

    await teardownPool(fx);
    const again = makeBackend(fx);
    await again.init();
    expect(await again.get('kept')).toBeUndefined();
    expect(await readFile(join(retainedAt!, 'note'), 'utf8')).toBe('still here');
    expect((await again.describe()).retainedVolumes).toBe('1');
  });
});
