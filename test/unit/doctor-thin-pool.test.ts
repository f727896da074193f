/**
 * doctor's thin pool check over the simulated kernel (fake-dm-kernel.ts): what `dmsetup status`
 * reports of a healthy, nearly full, read-only, needs_check, out-of-space or failed pool, and
 * the advice printed for each. (On a real kernel this runs only in the VM, which doctor's tests do not boot.)
 */
import { describe, expect, it } from 'vitest';
import type { CheckResult, DoctorContext } from '../../src/drivers/cli/doctor/check.js';
import { exitStatusOf } from '../../src/drivers/cli/doctor/check.js';
import { thinPoolCheck } from '../../src/drivers/cli/doctor/storage-checks.js';
import { storePlanOf } from '../../src/drivers/cli/doctor/store-plan.js';
import type { DaemonSettings } from '../../src/drivers/cli/daemon.js';
import { POOL_OPTIONS, setupFakeDm } from '../helpers/fake-dm-backend.js';

const settings: DaemonSettings = {
  backend: 'devicemapper', backendOptions: POOL_OPTIONS, root: '/state', socket: '/run/none.sock', nodeId: 'node-a',
  onRemove: 'delete', dockerSocket: undefined, heartbeatMs: 5_000, staleAfterMs: 30_000, mountGraceMs: 60_000, reconcileMs: 60_000,
};

async function poolUnderTest(): Promise<{ check: (daemonUp?: boolean) => Promise<CheckResult>; pool: () => ReturnType<Awaited<ReturnType<typeof setupFakeDm>>['kernel']['pool']> }> {
  const { kernel, fs, make } = await setupFakeDm();
  await make().init();
  const check = async (daemonUp = true) => {
    const ctx: DoctorContext = {
      settings, fs, runner: kernel, now: Date.now,
      daemon: daemonUp ? { info: { node: 'node-a', backend: 'devicemapper' }, mounts: [] } : undefined,
    };
    const results = await thinPoolCheck(ctx, storePlanOf(settings));
    expect(results).toHaveLength(1);
    return results[0]!;
  };
  return { check, pool: () => kernel.pool('pool') };
}

describe('doctor: the thin pool', () => {
  it('reports a healthy pool with its data and metadata usage', async () => {
    const { check } = await poolUnderTest();
    expect(await check()).toMatchObject({
      check: 'thin-pool', status: 'ok',
      message: expect.stringMatching(/^thin pool pool is healthy: poolDataUsed 0B of 1GiB \(0\.0%\), poolMetadataUsed \d+ of \d+ blocks \(\d+\.\d%\), poolMode rw$/),
    });
  });

  it('warns when nearly full and fails when read-only, flagged needs_check, out of data space or failed, each with advice', async () => {
    const { check, pool } = await poolUnderTest();
    pool().usedData = 14746;
    expect(await check()).toMatchObject({
      status: 'warn', message: expect.stringMatching(/^thin pool pool is nearly full: .*\(poolDataUsed [\d.]+MiB of 1GiB \(90\.0%\), /),
      advice: 'remove volumes or snapshots you no longer need, or extend the pool',
    });
    pool().usedData = 0;
    pool().mode = 'ro';
    expect(await check()).toMatchObject({
      status: 'fail', message: expect.stringMatching(/^thin pool pool is read-only \(a metadata error, or its metadata space is exhausted\) \(.*poolMode ro\)$/),
      advice: 'check the kernel log and the metadata device',
    });
    pool().mode = 'rw';
    pool().needsCheck = true;
    expect(await check()).toMatchObject({
      status: 'fail', message: expect.stringMatching(/^thin pool pool is flagged needs_check after a metadata error/),
      advice: 'deactivate it, run thin_check (and thin_repair) on its metadata device, then start stowage again',
    });
    pool().needsCheck = false;
    pool().mode = 'out_of_data_space';
    expect(await check()).toMatchObject({
      status: 'fail', message: expect.stringMatching(/^thin pool pool is out of data space: writes to its volumes fail/),
      advice: 'remove volumes or snapshots you no longer need, or extend the data device and reload the pool',
    });
    pool().mode = 'rw';
    pool().failed = true;
    const failed = await check();
    expect(failed).toMatchObject({ status: 'fail', message: expect.stringMatching(/^thin pool pool has failed/), advice: expect.stringMatching(/thin_check\/thin_repair/) });
    expect(exitStatusOf([failed])).toBe(1);
  });

  it('a pool that is not active: a warning while the daemon is down (it activates the pool), a failure while it runs', async () => {
    const { kernel, fs } = await setupFakeDm();
    const plan = storePlanOf(settings);
    const down = await thinPoolCheck({ settings, fs, runner: kernel, now: Date.now }, plan);
    expect(down).toEqual([{ check: 'thin-pool', status: 'warn', message: expect.stringMatching(/^thin pool pool is not active/),
      advice: 'the daemon activates or creates it at start: start the daemon' }]);
    const up = await thinPoolCheck({ settings, fs, runner: kernel, now: Date.now, daemon: { info: {}, mounts: [] } }, plan);
    expect(up[0]).toMatchObject({ status: 'fail', advice: expect.stringMatching(/dm.thinpoolname/) });
    expect(exitStatusOf(down)).toBe(0);
    expect(exitStatusOf(down, true)).toBe(1);
  });
});
