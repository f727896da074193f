/** The devicemapper backend against a real kernel: reboots, foreign ids, adoption, full pools, busy devices. */
import { open, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, describe, expect, it } from 'vitest';
import type { CreateRequest } from '../../../src/core/backend.js';
import { createRequest } from '../../../src/core/create-request.js';
import { ErrorCodes } from '../../../src/core/errors.js';
import { parsePoolStatus } from '../../../src/backends/devicemapper/status-parser.js';
import { parseProcMounts } from '../../../src/core/proc-mounts.js';
import { memoryLogger } from '../../helpers/memory-logger.js';
import { destroyPool, makeBackend, makePoolFiles, sh, teardownPool, type PoolFixture } from './dm-harness.js';

const req = (name: string, size?: string): CreateRequest =>
  createRequest(name, size ? { size: Number.parseInt(size, 10) * 2 ** 20 } : {}, { createdAt: new Date().toISOString(), createdBy: 'vm-node' });

const fixtures: PoolFixture[] = [];
async function pool(sizes: Parameters<typeof makePoolFiles>[0] = {}): Promise<PoolFixture> {
  const fx = await makePoolFiles(sizes);
  fixtures.push(fx);
  return fx;
}
afterEach(async () => {
  for (const fx of fixtures.splice(0)) await destroyPool(fx);
});

async function mountSource(path: string): Promise<string | undefined> {
  return parseProcMounts(await readFile('/proc/self/mounts', 'utf8')).find((m) => m.target === path)?.source;
}

async function poolStatus(fx: PoolFixture) {
  return parsePoolStatus(await sh('dmsetup', ['status', fx.poolName]));
}

describe('devicemapper pool lifecycle on a real kernel', () => {
  it('re-creates the pool after a reboot: volumes re-activated, re-mounted where they were, data intact', async () => {
    const fx = await pool();
    const first = makeBackend(fx);
    await first.init();
    await first.create(req('kept-mounted'));
    await first.create(req('kept-detached'));
    const mounted = await first.attach('kept-mounted');
    await writeFile(join(mounted, 'a.txt'), 'mounted through the reboot');
    const detached = await first.attach('kept-detached');
    await writeFile(join(detached, 'b.txt'), 'detached before the reboot');
    await first.detach('kept-detached');
    const txBefore = (await first.describe()).transactionId;
    await first.dispose();

    await teardownPool(fx);
    expect(parsePoolStatusOrAbsent(await execa('dmsetup', ['status', fx.poolName], { reject: false }))).toBe('absent');

    const log = memoryLogger();
    const second = makeBackend(fx, {}, log);
    await second.init();
    expect(log.lines.join('\n')).toMatch(/re-created thin pool/);
    expect((await second.describe()).transactionId).toBe(txBefore);
    expect((await second.list()).map((v) => v.name)).toEqual(['kept-detached', 'kept-mounted']);
    expect(await mountSource(second.mountPath('kept-mounted'))).toMatch(/^\/dev\/mapper\//);
    expect(await readFile(join(second.mountPath('kept-mounted'), 'a.txt'), 'utf8')).toBe('mounted through the reboot');
    expect(await mountSource(second.mountPath('kept-detached'))).toBeUndefined();
    expect(await readFile(join(await second.attach('kept-detached'), 'b.txt'), 'utf8')).toBe('detached before the reboot');
    await second.dispose();

    // The same files under a state root that knows nothing of them: refused, never wiped.
    await teardownPool(fx);
    const stranger = makeBackend({ ...fx, root: join(fx.dir, 'other-root') });
    await expect(stranger.init()).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/already holds thin-pool metadata/),
    });
  });

  it('skips thin ids someone else took ("File exists") and never reuses any id, its own freed ones included', async () => {
    const fx = await pool();
    const backend = makeBackend(fx);
    await backend.init();
    await sh('dmsetup', ['message', fx.poolName, '0', 'create_thin 0']);
    await backend.create(req('first'));
    expect((await backend.volumeStatus('first')).thinId).toBe('1');
    expect(backend.pool.state.foreignIds).toEqual([0]);
    await backend.remove('first', { retain: false });
    await backend.create(req('second'));
    expect((await backend.volumeStatus('second')).thinId).toBe('2');
    const state = JSON.parse(await readFile(join(fx.root, 'devicemapper', `${fx.poolName}.json`), 'utf8')) as { foreignIds: number[] };
    expect(state.foreignIds).toEqual([0]);
    await sh('dmsetup', ['message', fx.poolName, '0', 'delete 0']);
  });

  it('adopts an active pool by name alone and works around the ids already in it (read from its metadata)', async () => {
    const fx = await pool();
    const owner = makeBackend(fx);
    await owner.init();
    await owner.create(req('owned'));
    await owner.dispose();
    const { 'dm.datadev': _d, 'dm.metadatadev': _m, ...byName } = fx.options;
    const adopter = makeBackend({ ...fx, root: join(fx.dir, 'adopter-root'), options: byName });
    await adopter.init();
    expect((await adopter.describe()).poolCreatedBy).toBe('adopted');
    expect(await adopter.list()).toEqual([]);
    await adopter.create(req('guest'));
    expect((await adopter.volumeStatus('guest')).thinId).toBe('1');
    expect(adopter.pool.state.foreignIds).toEqual([]);
    expect(adopter.pool.state.nextThinId).toBe(2);
    await adopter.remove('guest', { retain: false });
  });

  it('refuses new volumes with E_STORAGE_FULL when the pool is nearly full and when it is out of data space', async () => {
    const fx = await pool({ dataMiB: 64, volumeSize: '128M' });
    const backend = makeBackend(fx);
    await backend.init();
    await backend.create(req('filler'));
    const thinId = Number((await backend.volumeStatus('filler')).thinId);
    const device = await backend.pool.activateDevice(thinId, (128 * 2 ** 20) / 512, 'filler');
    let mib = 0;
    while ((await poolStatus(fx)).failed === false) {
      const s = await poolStatus(fx);
      if (s.failed || s.usedDataBlocks / s.totalDataBlocks >= 0.92) break;
      await execa('dd', ['if=/dev/urandom', `of=${device}`, 'bs=1M', 'count=2', `seek=${mib}`, 'oflag=direct', 'status=none']);
      mib += 2;
    }
    await expect(backend.create(req('one-more'))).rejects.toMatchObject({
      code: ErrorCodes.STORAGE_FULL, message: expect.stringMatching(/nearly full.*10%/),
    });
    expect((await backend.volumeStatus('filler')).poolHealth).toBe('nearly-full');
    const fill = await execa('dd', ['if=/dev/urandom', `of=${device}`, 'bs=1M', `seek=${mib}`, 'oflag=direct', 'status=none'], { reject: false });
    expect(fill.stderr).toMatch(/No space left on device/);
    const full = await poolStatus(fx);
    expect(full.failed === false && full.mode).toBe('out_of_data_space');
    await expect(backend.create(req('one-more'))).rejects.toMatchObject({
      code: ErrorCodes.STORAGE_FULL, message: expect.stringMatching(/out of data space/),
    });
    expect((await backend.describe()).poolHealth).toBe('out-of-data-space');
    expect(await backend.get('one-more')).toBeUndefined();
    await backend.pool.deactivateDevice(thinId, 'filler');
    await backend.remove('filler', { retain: false });
  });

  it('retries remove while the device is busy, and reports a device or mount that stays busy as E_VOLUME_IN_USE', async () => {
    const fx = await pool();
    const backend = makeBackend(fx);
    await backend.init();
    await backend.create(req('held'));
    const thinId = Number((await backend.volumeStatus('held')).thinId);
    const device = await backend.pool.activateDevice(thinId, (16 * 2 ** 20) / 512, 'held');

    const holder = await open(device, 'r');
    await expect(backend.remove('held', { retain: false })).rejects.toMatchObject({ code: ErrorCodes.VOLUME_IN_USE });
    expect(await backend.get('held')).toBeDefined();
    setTimeout(() => void holder.close(), 300);
    await backend.remove('held', { retain: false });
    expect(await backend.get('held')).toBeUndefined();
    const gone = await execa('dmsetup', ['message', fx.poolName, '0', `delete ${thinId}`], { reject: false });
    expect(gone.stderr).toMatch(/No data available/);

    await backend.create(req('cwd-held'));
    const path = await backend.attach('cwd-held');
    const squatter = execa('sleep', ['60'], { cwd: path, reject: false });
    try {
      await expect(backend.remove('cwd-held', { retain: false })).rejects.toMatchObject({
        code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/cannot be unmounted/),
      });
    } finally {
      squatter.kill('SIGKILL');
      await squatter;
    }
    await backend.remove('cwd-held', { retain: false });
    expect(await mountSource(path)).toBeUndefined();
  });
});

describe('devicemapper with dm.fs=xfs on a real kernel', () => {
  it('makes, mounts and keeps an xfs volume', async () => {
    const fx = await pool({ dataMiB: 1024, volumeSize: '320M' });
    const backend = makeBackend(fx, { 'dm.fs': 'xfs' });
    await backend.init();
    await backend.create(req('xfs-vol'));
    const path = await backend.attach('xfs-vol');
    expect((await readFile('/proc/self/mounts', 'utf8')).split('\n').find((l) => l.includes(` ${path} `))).toMatch(/ xfs /);
    expect(await readdir(path)).toEqual([]);
    await writeFile(join(path, 'x'), 'on xfs');
    await backend.detach('xfs-vol');
    expect(await readFile(join(await backend.attach('xfs-vol'), 'x'), 'utf8')).toBe('on xfs');
    await backend.detach('xfs-vol');
    await backend.remove('xfs-vol', { retain: false });
  });
});

function parsePoolStatusOrAbsent(result: { exitCode?: number; stderr: string }): string {
  return result.exitCode !== 0 && /Device does not exist/.test(result.stderr) ? 'absent' : 'present';
}
