/**
 * doctor's thin pool check on a real kernel: the real `dmsetup status` of an active pool with data
 * in it, then of a pool that is no longer active.
 */
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import * as realFs from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { ExecaCommandRunner } from '../../../src/core/command-runner.js';
import { createRequest } from '../../../src/core/create-request.js';
import type { FsPort } from '../../../src/core/fs-port.js';
import type { DaemonSettings } from '../../../src/drivers/cli/daemon.js';
import { thinPoolCheck } from '../../../src/drivers/cli/doctor/storage-checks.js';
import { storePlanOf } from '../../../src/drivers/cli/doctor/store-plan.js';
import { MiB, destroyPool, makeBackend, makePoolFiles, teardownPool, type PoolFixture } from './dm-harness.js';

const fixtures: PoolFixture[] = [];
afterEach(async () => {
  for (const fx of fixtures.splice(0)) await destroyPool(fx);
});

describe('stowage doctor: the thin pool on a real kernel', () => {
  it('reports a pool\'s real usage, and a pool that is not active', async () => {
    const fx = await makePoolFiles();
    fixtures.push(fx);
    const backend = makeBackend(fx);
    await backend.init();
    await backend.create(createRequest('filled', {}, { createdAt: new Date().toISOString(), createdBy: 'vm-node' }));
    const dir = await backend.attach('filled');
    const file = await open(join(dir, 'data'), 'w');
    await file.write(Buffer.alloc(8 * MiB, 7));
    await file.sync();
    await file.close();
    const settings: DaemonSettings = {
      backend: 'devicemapper', backendOptions: fx.options, root: fx.root, socket: join(fx.dir, 'none.sock'), nodeId: 'vm-node',
      onRemove: 'delete', dockerSocket: undefined, heartbeatMs: 5_000, staleAfterMs: 30_000, mountGraceMs: 60_000, reconcileMs: 60_000,
    };
    const ctx = { settings, fs: realFs as FsPort, runner: new ExecaCommandRunner(), now: Date.now };
    const [healthy] = await thinPoolCheck(ctx, storePlanOf(settings));
    expect(healthy).toMatchObject({
      check: 'thin-pool', status: 'ok',
      message: expect.stringMatching(new RegExp(`^thin pool ${fx.poolName} is healthy: poolDataUsed [\\d.]+MiB of 512MiB \\(\\d+\\.\\d%\\), .*poolMode rw$`)),
    });
    await backend.detach('filled');
    await backend.dispose();
    await teardownPool(fx);
    const [inactive] = await thinPoolCheck(ctx, storePlanOf(settings));
    expect(inactive).toMatchObject({ status: 'warn', message: expect.stringMatching(new RegExp(`^thin pool ${fx.poolName} is not active`)) });
  });
});
