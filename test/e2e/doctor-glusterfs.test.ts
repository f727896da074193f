/**
 * `stowage doctor` on the glusterfs backend against a real glusterd: healthy (peers, the pool
 * started, this node's mount answering), then with the pool volume stopped: it fails, naming the
 * command that starts it again.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertCliBuilt, killAllDaemons, runCli, startDaemon } from '../helpers/daemon-process.js';
import { startGlusterd, type Glusterd } from '../helpers/glusterd.js';
import { unmountUnder } from '../helpers/gluster-backend.js';
import { checkGluster, systemSuite } from '../helpers/requirements.js';

const skip = systemSuite('glusterfs', checkGluster());

interface Check { check: string; status: string; message: string; advice?: string }
interface Report { exitStatus: number; checks: Check[] }

describe.skipIf(skip)('stowage doctor on the glusterfs backend', { timeout: 300_000 }, () => {
  let gd: Glusterd;
  let root: string;
  let options: string[];
  const doctor = async () => {
    const result = await runCli(['doctor', '--json', ...options], { timeoutMs: 120_000 });
    return { exitCode: result.exitCode, report: JSON.parse(result.stdout) as Report };
  };
  const check = (report: Report, name: string) => report.checks.find((c) => c.check === name);

  beforeAll(async () => {
    assertCliBuilt();
    gd = await startGlusterd();
    await gd.createVolume({ name: 'docpool' });
    root = await gd.tempDir('doctor-');
    options = ['--socket', join(root, 's.sock'), '--root', join(root, 'root'), '--backend', 'glusterfs', '--node-id', 'g1',
      '--docker-host', 'none', '--opt', 'glusterfs.pool=docpool', '--opt', `glusterfs.servers=${gd.host}`,
      '--opt', `glusterfs.glusterdsocket=${gd.socket}`];
    await startDaemon(join(root, 's.sock'), options.slice(2), { timeoutMs: 60_000 });
  });
  afterAll(async () => {
    await killAllDaemons();
    if (root) await unmountUnder(root);
    await gd?.stop();
  });

  it('finds the peers, the pool started and its mount alive', async () => {
    const { report } = await doctor();
    expect(check(report, 'gluster-peers')).toMatchObject({ status: 'ok', message: 'glusterd answers; 1 peer(s) in the trusted pool, all connected' });
    expect(check(report, 'gluster-pool')).toMatchObject({ status: 'ok', message: 'pool volume docpool is started (1 brick(s))' });
    expect(check(report, 'gluster-mount')).toMatchObject({
      status: 'ok', message: `pool docpool is mounted at ${join(root, 'root', 'glusterfs', 'mnt', 'docpool')} and answers`,
    });
    expect(check(report, 'store-sharing')).toMatchObject({ status: 'ok', message: 'shared by design: gluster pool docpool (scope global)' });
    expect(check(report, 'store-space')?.status).toBe('ok');
    expect(check(report, 'nodes')?.status).toBe('ok');
    // Only the missing engine is worth a warning here; nothing fails.
    expect(report.checks.filter((c) => c.status === 'fail')).toEqual([]);
  });

  it('fails with the pool volume stopped, saying how to start it', async () => {
    await gd.stopVolume('docpool');
    try {
      const { exitCode, report } = await doctor();
      expect(exitCode).toBe(1);
      expect(check(report, 'gluster-pool')).toMatchObject({
        status: 'fail',
        message: 'pool volume docpool is stopped, not started: no volume of this node can be reached',
        advice: 'gluster volume start docpool',
      });
      // Whether the daemon already dropped the dead mount or not, the stopped pool is named as the cause.
      expect(check(report, 'gluster-mount')).toMatchObject({
        status: 'fail', message: expect.stringMatching(/^pool docpool (is not mounted at|is mounted at .* but dead) .*: the pool volume is stopped$/),
        advice: expect.stringMatching(/^gluster volume start docpool; the daemon mounts it again on its next use/),
      });
      expect(check(report, 'store-space')?.status).toBe('skip');
    } finally {
      await gd.startVolume('docpool');
    }
  });
});
