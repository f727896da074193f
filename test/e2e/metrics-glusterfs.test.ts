/**
 * The metrics endpoint of a real `stowage daemon` on the glusterfs backend (subdir mode, with
 * directory quotas, the default) against a real glusterd: a volume created with a size, mounted
 * and written with 10 MiB shows about 10 MiB used and its size as capacity, the pool mount is
 * up, and the create is counted. `npm test` builds dist/ first; run `npm run build` before
 * running this file alone.
 */
import { randomBytes } from 'node:crypto';
import { open, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertCliBuilt, killAllDaemons, startDaemon } from '../helpers/daemon-process.js';
import { startGlusterd, type Glusterd } from '../helpers/glusterd.js';
import { eventually, unmountUnder } from '../helpers/gluster-backend.js';
import { sample, scrapeMetrics } from '../helpers/metrics-scrape.js';
import { pluginCall } from '../helpers/plugin-client.js';
import { checkGluster, systemSuite } from '../helpers/requirements.js';

const skip = systemSuite('glusterfs', checkGluster());
const MiB = 2 ** 20;
const POOL = 'metpool';

describe.skipIf(skip)('stowage daemon --metrics on the glusterfs backend (subdir mode)', { timeout: 300_000 }, () => {
  let gd: Glusterd;
  let root: string;
  let socket: string;
  let metricsSocket: string;
  const call = async (method: string, body: object) => {
    const reply = await pluginCall(socket, method, body, { timeoutMs: 120_000 });
    expect(reply.Err, `${method} ${JSON.stringify(body)}`).toBeFalsy();
    return reply;
  };

  beforeAll(async () => {
    assertCliBuilt();
    gd = await startGlusterd();
    await gd.createVolume({ name: POOL });
    root = await gd.tempDir('metrics-');
    socket = join(root, 's.sock');
    metricsSocket = join(root, 'm.sock');
    await startDaemon(socket, ['--root', join(root, 'root'), '--backend', 'glusterfs', '--node-id', 'g1', '--docker-host', 'none',
      '--opt', `glusterfs.pool=${POOL}`, '--opt', `glusterfs.servers=${gd.host}`, '--opt', `glusterfs.glusterdsocket=${gd.socket}`,
      '--metrics', `unix:${metricsSocket}`], { timeoutMs: 60_000 });
  });
  afterAll(async () => {
    await killAllDaemons();
    if (root) await unmountUnder(root);
    await gd?.stop();
  });

  it('shows a sized volume written with 10 MiB as about 10 MiB used of its size, the pool mount up, the create counted', async () => {
    await call('Create', { Name: 'filled', Opts: { size: '64M' } });
    const mountpoint = String((await call('Mount', { Name: 'filled', ID: 'writer' })).Mountpoint);
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

    const samples = await scrapeMetrics(metricsSocket);
    const used = sample(samples, 'stowage_volume_used_bytes{volume="filled"}');
    expect(used).toBeGreaterThanOrEqual(10 * MiB);
    expect(used).toBeLessThan(11 * MiB);
    expect(sample(samples, 'stowage_volume_capacity_bytes{volume="filled"}')).toBe(64 * MiB);
    const available = sample(samples, 'stowage_volume_available_bytes{volume="filled"}');
    expect(available).toBeLessThanOrEqual(64 * MiB - 10 * MiB);
    expect(available).toBeGreaterThan(50 * MiB);
    expect(sample(samples, `stowage_gluster_mount_up{volume="${POOL}"}`)).toBe(1);
    expect(sample(samples, 'stowage_operation_duration_seconds_count{operation="create",backend="glusterfs"}')).toBe(1);
    expect(sample(samples, 'stowage_operation_duration_seconds_count{operation="mount",backend="glusterfs"}')).toBe(1);
    expect(sample(samples, 'stowage_volumes')).toBe(1);
    expect(sample(samples, 'stowage_mounts')).toBe(1);
    expect(samples.has('stowage_operation_errors_total{operation="create",code="E_VOLUME_NOT_FOUND"}')).toBe(false);
    await call('Unmount', { Name: 'filled', ID: 'writer' });
  });
});
