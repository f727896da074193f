/**
 * The metrics endpoint of the built daemon on the devicemapper backend, on a real kernel: a thin
 * volume written with 10 MiB through its ext4 filesystem shows about 10 MiB used (the thin
 * device's mapped blocks: what the filesystem wrote, its metadata included), its size as
 * capacity, and the thin pool's data and metadata usage.
 */
import { randomBytes } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { parseProcMounts } from '../../../src/core/proc-mounts.js';
import { assertCliBuilt, killAllDaemons, startDaemon } from '../../helpers/daemon-process.js';
import { sample, scrapeMetrics } from '../../helpers/metrics-scrape.js';
import { pluginCall } from '../../helpers/plugin-client.js';
import { MiB, destroyPool, makePoolFiles, type PoolFixture } from './dm-harness.js';

let fx: PoolFixture | undefined;
afterAll(async () => {
  await killAllDaemons();
  if (fx) await destroyPool(fx);
});

async function call(socket: string, method: string, body: object): Promise<Record<string, unknown>> {
  const reply = await pluginCall(socket, method, body, { timeoutMs: 120_000 });
  expect(reply.Err, `${method} ${JSON.stringify(body)}`).toBeFalsy();
  return reply;
}

/** A thin device's mapped bytes, from the kernel (`dmsetup status`: `<mapped sectors> <highest mapped sector>`). */
async function mappedBytes(device: string): Promise<number> {
  const { stdout } = await execa('dmsetup', ['status', device]);
  const fields = stdout.trim().split(/\s+/);
  expect(fields[2]).toBe('thin');
  return Number(fields[3]) * 512;
}

describe('stowage daemon --metrics on devicemapper', () => {
  it('shows a thin volume written with 10 MiB as about 10 MiB used of its size, and the pool\'s usage', async () => {
    assertCliBuilt();
    fx = await makePoolFiles({ dataMiB: 512, metaMiB: 16 });
    const socket = join(fx.dir, 'plugin.sock');
    const metricsSocket = join(fx.dir, 'metrics.sock');
    await startDaemon(socket, ['--backend', 'devicemapper', '--root', fx.root, '--node-id', 'vm-node', '--docker-host', 'none',
      '--metrics', `unix:${metricsSocket}`, ...Object.entries(fx.options).flatMap(([k, v]) => ['--opt', `${k}=${v}`])], { timeoutMs: 90_000 });

    await call(socket, 'Create', { Name: 'filled', Opts: { size: '64M' } });
    const mountpoint = String((await call(socket, 'Mount', { Name: 'filled', ID: 'writer' })).Mountpoint);
    const mounted = parseProcMounts(await readFile('/proc/self/mounts', 'utf8')).find((m) => m.target === mountpoint);
    expect(mounted?.source).toMatch(new RegExp(`^/dev/mapper/${fx.poolName}-t\\d+$`));
    const device = mounted!.source.slice('/dev/mapper/'.length);
    // What mkfs and the mount wrote before any data, the filesystem's own blocks (0.75 MiB
    // measured on this 64 MiB ext4): mapped, so counted as used.
    const before = await mappedBytes(device);

    const file = await open(join(mountpoint, 'blob'), 'w');
    await file.writeFile(randomBytes(10 * MiB));
    await file.sync();
    await file.close();
    const after = await mappedBytes(device);

    // No scrape before this one: a volume's usage is cached 60 s once measured.
    const samples = await scrapeMetrics(metricsSocket);
    const used = sample(samples, 'stowage_volume_used_bytes{volume="filled"}');
    process.stderr.write(`[metrics guest] mapped before the write ${(before / MiB).toFixed(2)} MiB, after ${(after / MiB).toFixed(2)} MiB; ` +
      `stowage_volume_used_bytes ${(used / MiB).toFixed(2)} MiB\n`);
    // The gauge is the kernel's count (the device is idle since the sync).
    expect(used).toBe(after);
    // The 10 MiB, plus the inode, bitmap and journal blocks the write touched (64 KiB thin blocks).
    expect(used - before).toBeGreaterThanOrEqual(10 * MiB);
    expect(used - before).toBeLessThan(11 * MiB);
    // All of it with the filesystem's own blocks: well under the 64 MiB the volume may hold.
    expect(used).toBeLessThan(24 * MiB);
    expect(sample(samples, 'stowage_volume_capacity_bytes{volume="filled"}')).toBe(64 * MiB);
    expect(sample(samples, 'stowage_volume_available_bytes{volume="filled"}')).toBe(64 * MiB - used);

    const pool = `{pool="${fx.poolName}"}`;
    const dataUsed = sample(samples, `stowage_thin_pool_data_used_bytes${pool}`);
    const dataSize = sample(samples, `stowage_thin_pool_data_size_bytes${pool}`);
    const metaUsed = sample(samples, `stowage_thin_pool_metadata_used_bytes${pool}`);
    const metaSize = sample(samples, `stowage_thin_pool_metadata_size_bytes${pool}`);
    expect(dataSize).toBe(512 * MiB);
    // The pool holds the one volume's blocks (and nothing else here).
    expect(dataUsed).toBe(used);
    expect(dataUsed / dataSize).toBeGreaterThan(0);
    expect(dataUsed / dataSize).toBeLessThan(1);
    // The metadata device, less what dm-thin keeps for itself; a few blocks of it in use.
    expect(metaSize).toBeGreaterThan(15 * MiB);
    expect(metaSize).toBeLessThanOrEqual(16 * MiB);
    expect(metaUsed).toBeGreaterThan(0);
    expect(metaUsed / metaSize).toBeLessThan(1);
    expect(sample(samples, `stowage_thin_pool_healthy${pool}`)).toBe(1);
    expect(sample(samples, 'stowage_operation_duration_seconds_count{operation="create",backend="devicemapper"}')).toBe(1);
    expect(sample(samples, 'stowage_volumes')).toBe(1);
    expect(sample(samples, 'stowage_mounted_volumes')).toBe(1);
    await call(socket, 'Unmount', { Name: 'filled', ID: 'writer' });
  });
});
