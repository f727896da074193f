/**
 * The devicemapper backend's usage and storage health (what the metrics endpoint and `stowage
 * doctor` read) on the simulated kernel: parsed from `dmsetup status` of the thin device and of
 * the pool. The same on a real kernel is not checked here (no VM test yet).
 */
import { describe, expect, it } from 'vitest';
import { request, setupFakeDm } from '../helpers/fake-dm-backend.js';

const MiB = 1024 * 1024;

describe('devicemapper usage and storage health', () => {
  it('reports a volume\'s mapped blocks against its size, and nothing for an unknown volume', async () => {
    const { kernel, make } = await setupFakeDm();
    const backend = make();
    await backend.init();
    await backend.create(request('v1', { size: 64 * MiB }));
    await backend.attach('v1');
    const thin = [...kernel.devices.values()].find((d) => d.thinId !== undefined);
    expect(thin, 'no active thin device').toBeDefined();
    thin!.mappedSectors = (10 * MiB) / 512;
    expect(await backend.usage('v1')).toEqual({ capacityBytes: 64 * MiB, usedBytes: 10 * MiB, availableBytes: 54 * MiB });
    expect(await backend.usage('nope')).toBeUndefined();
    await backend.dispose();
  });

  it('reports the pool\'s data and metadata space and whether it accepts writes', async () => {
    const { kernel, make } = await setupFakeDm();
    const backend = make();
    await backend.init();
    const pool = kernel.devices.get('pool')!.pool!;
    pool.usedData = 100;
    const healthy = (await backend.storageHealth()).thinPool!;
    // 64 KiB blocks (128 sectors) over a 1 GiB data device; dm-thin counts metadata in 4 KiB blocks.
    expect(healthy).toEqual({
      pool: 'pool', dataUsedBytes: 100 * 64 * 1024, dataSizeBytes: 1024 * MiB,
      metadataUsedBytes: 418 * 4096, metadataSizeBytes: 4096 * 4096, healthy: true,
    });
    pool.mode = 'out_of_data_space';
    expect((await backend.storageHealth()).thinPool!.healthy).toBe(false);
    pool.failed = true;
    expect((await backend.storageHealth()).thinPool).toMatchObject({ pool: 'pool', healthy: false, dataSizeBytes: 0 });
    pool.failed = false;
    pool.mode = 'rw';
    await backend.dispose();
  });
});
