/**
 * The metrics endpoint of real `stowage daemon`s on the glusterfs backend against a real
 * glusterd, in both modes with quotas (the default): a volume created with a size, mounted and
 * written with 10 MiB shows about 10 MiB used and its size as capacity; the pool mount is up and
 * the create is counted. In volume mode the usage is known only while the volume is mounted on
 * this node. `npm test` builds dist/ first; run `npm run build` before running this file alone.
 */
import { randomBytes } from 'node:crypto';
import { open, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertCliBuilt, killAllDaemons, startDaemon } from '../helpers/daemon-process.js';
import { startGlusterd, type Glusterd } from '../helpers/glusterd.js';
import { eventually, unmountUnder } from '../helpers/gluster-backend.js';
import { sample, scrapeMetrics, type Samples } from '../helpers/metrics-scrape.js';
import { pluginCall } from '../helpers/plugin-client.js';
import { checkGluster, systemSuite } from '../helpers/requirements.js';

const skip = systemSuite('glusterfs', checkGluster());
const MiB = 2 ** 20;
const POOL = 'metpool';
const STATE_POOL = 'metstate';

interface Daemon {
  socket: string;
  metricsSocket: string;
}

async function call(daemon: Daemon, method: string, body: object): Promise<Record<string, unknown>> {
  const reply = await pluginCall(daemon.socket, method, body, { timeoutMs: 120_000 });
  expect(reply.Err, `${method} ${JSON.stringify(body)}`).toBeFalsy();
  return reply;
}

/** Creates `name` with 64M, mounts it, writes 10 MiB and waits until statfs through the mount counts them. */
async function fill(daemon: Daemon, name: string): Promise<void> {
  await call(daemon, 'Create', { Name: name, Opts: { size: '64M' } });
  const mountpoint = String((await call(daemon, 'Mount', { Name: name, ID: 'writer' })).Mountpoint);
  const file = await open(join(mountpoint, 'blob'), 'w');
  await file.writeFile(randomBytes(10 * MiB));
  await file.sync();
  await file.close();
  // The usage is statfs through the mount, which answers with the quota's accounting
  // (features.quota-deem-statfs), updated by the bricks a moment after the write. A scrape
  // caches what it measured for 60 s, so the first scrape waits for the accounting.
  expect(await eventually(async () => {
    const fs = await statfs(mountpoint);
    return (fs.blocks - fs.bfree) * fs.bsize >= 10 * MiB;
  }, 60_000), 'the quota accounted the 10 MiB').toBe(true);
}

function expectFilled(samples: Samples, name: string): void {
  const used = sample(samples, `stowage_volume_used_bytes{volume="${name}"}`);
  expect(used).toBeGreaterThanOrEqual(10 * MiB);
  expect(used).toBeLessThan(11 * MiB);
  expect(sample(samples, `stowage_volume_capacity_bytes{volume="${name}"}`)).toBe(64 * MiB);
  const available = sample(samples, `stowage_volume_available_bytes{volume="${name}"}`);
  expect(available).toBeLessThanOrEqual(64 * MiB - 10 * MiB);
  expect(available).toBeGreaterThan(50 * MiB);
}

describe.skipIf(skip)('stowage daemon --metrics on the glusterfs backend', { timeout: 300_000 }, () => {
  let gd: Glusterd;
  let root: string;
  const subdir: Daemon = { socket: '', metricsSocket: '' };
  const volume: Daemon = { socket: '', metricsSocket: '' };

  beforeAll(async () => {
    assertCliBuilt();
    gd = await startGlusterd();
    await gd.createVolume({ name: POOL });
    await gd.createVolume({ name: STATE_POOL });
    root = await gd.tempDir('metrics-');
    const bricks = await gd.tempDir('metbricks-');
    const gluster = ['--docker-host', 'none', '--backend', 'glusterfs', '--opt', `glusterfs.servers=${gd.host}`,
      '--opt', `glusterfs.glusterdsocket=${gd.socket}`];
    const start = async (daemon: Daemon, name: string, options: string[]) => {
      daemon.socket = join(root, `${name}.sock`);
      daemon.metricsSocket = join(root, `${name}-metrics.sock`);
      await startDaemon(daemon.socket, ['--root', join(root, name), '--node-id', name, ...gluster, ...options,
        '--metrics', `unix:${daemon.metricsSocket}`], { timeoutMs: 60_000 });
    };
    await start(subdir, 'subdir', ['--opt', `glusterfs.pool=${POOL}`]);
    await start(volume, 'volume', ['--opt', 'glusterfs.mode=volume', '--opt', `glusterfs.pool=${STATE_POOL}`,
      '--opt', `glusterfs.bricks=${gd.host}:${bricks}`, '--opt', 'glusterfs.brickforce=true']);
  });
  afterAll(async () => {
    await killAllDaemons();
    if (root) await unmountUnder(root);
    await gd?.stop();
  });

  it('subdir mode: a sized volume written with 10 MiB shows about 10 MiB used of its size, the pool mount up, the create counted', async () => {
    await fill(subdir, 'filled');
    const samples = await scrapeMetrics(subdir.metricsSocket);
    expectFilled(samples, 'filled');
    expect(sample(samples, `stowage_gluster_mount_up{volume="${POOL}"}`)).toBe(1);
    expect(sample(samples, 'stowage_operation_duration_seconds_count{operation="create",backend="glusterfs"}')).toBe(1);
    expect(sample(samples, 'stowage_operation_duration_seconds_count{operation="mount",backend="glusterfs"}')).toBe(1);
    expect(sample(samples, 'stowage_volumes')).toBe(1);
    expect(sample(samples, 'stowage_mounts')).toBe(1);
    expect(samples.has('stowage_operation_errors_total{operation="create",code="E_VOLUME_NOT_FOUND"}')).toBe(false);
    await call(subdir, 'Unmount', { Name: 'filled', ID: 'writer' });
  });

  it('volume mode: a mounted volume shows its usage and size, one not mounted on this node none', async () => {
    await call(volume, 'Create', { Name: 'idle', Opts: { size: '64M' } });
    await fill(volume, 'vfilled');
    const samples = await scrapeMetrics(volume.metricsSocket);
    expectFilled(samples, 'vfilled');
    expect(samples.has('stowage_volume_used_bytes{volume="idle"}')).toBe(false);
    expect(sample(samples, 'stowage_volumes')).toBe(2);
    expect(sample(samples, `stowage_gluster_mount_up{volume="${STATE_POOL}"}`)).toBe(1);
    expect(sample(samples, 'stowage_operation_duration_seconds_count{operation="create",backend="glusterfs"}')).toBe(2);
    await call(volume, 'Unmount', { Name: 'vfilled', ID: 'writer' });
  });
});
