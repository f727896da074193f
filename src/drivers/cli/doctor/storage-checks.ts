import { statfs } from 'node:fs/promises';
import { GlusterCli } from '../../../backends/glusterfs/gluster-cli.js';
import { GlusterMounter } from '../../../backends/glusterfs/gluster-mount.js';
import { evaluatePoolHealth } from '../../../backends/devicemapper/index.js';
import type { PoolCondition } from '../../../backends/devicemapper/pool-health.js';
import { parsePoolStatus } from '../../../backends/devicemapper/status-parser.js';
import { errnoCode, messageOf } from '../../../core/errors.js';
import { silentLogger } from '../../../core/logger.js';
import { formatBytesApprox } from '../../../core/options.js';
import { fail, ok, skip, warn, type CheckResult, type DoctorContext } from './check.js';
import type { StorePlan } from './store-plan.js';

/** Used fraction of a filesystem's space or inodes beyond which a check warns, and fails. */
export const SPACE_WARN = 0.9;
export const SPACE_FAIL = 0.95;

async function spaceOf(ctx: DoctorContext, what: string, path: string, check: string): Promise<CheckResult> {
  let st;
  try {
    st = await statfs(path);
  } catch (err) {
    return errnoCode(err) === 'ENOENT'
      ? skip(check, `${what} ${path} does not exist yet`)
      : fail(check, `cannot ask the filesystem of ${what} ${path} for its free space: ${messageOf(err)}`,
        'a hung network mount answers so: check the mount on this node');
  }
  const total = st.blocks * st.bsize;
  const avail = st.bavail * st.bsize;
  // As df counts it: blocks reserved for root (ext4's -m) are neither used nor available, so a
  // filesystem with a large reserve does not read as filling up while it is nearly empty.
  const usedBlocks = st.blocks - st.bfree;
  const used = usedBlocks + st.bavail === 0 ? 0 : usedBlocks / (usedBlocks + st.bavail);
  const inodesUsed = st.files === 0 ? 0 : 1 - st.ffree / st.files;
  const facts = `${formatBytesApprox(avail, 1)} of ${formatBytesApprox(total, 1)} free (${(used * 100).toFixed(1)}% used as df counts it` +
    `${st.files > 0 ? `, inodes ${(inodesUsed * 100).toFixed(1)}% used` : ''})`;
  const worst = Math.max(used, inodesUsed);
  const advice = `free space on the filesystem of ${path} (remove what you no longer need, or grow it): ` +
    (what === '--root' ? 'mount records and volume state are written there, and a write that fails leaves mounts unrecorded'
      : 'volumes on it cannot grow, and creates fail');
  if (worst >= SPACE_FAIL) return fail(check, `${what} ${path} is nearly full: ${facts}`, advice);
  if (worst >= SPACE_WARN) return warn(check, `${what} ${path} is filling up: ${facts}`, advice);
  return ok(check, `${what} ${path}: ${facts}`);
}

/**
 * statfs under --root and the store (a devicemapper pool's own usage is the thin-pool check).
 * `absent`: why there is no vfs store to measure (an empty mount point's space is the disk below).
 */
export async function spaceChecks(ctx: DoctorContext, plan: StorePlan, absent?: string): Promise<CheckResult[]> {
  const results = [await spaceOf(ctx, '--root', ctx.settings.root, 'root-space')];
  if (plan.backend === 'vfs') results.push(absent ? skip('store-space', absent) : await spaceOf(ctx, 'the store', plan.storePath, 'store-space'));
  else if (plan.backend === 'glusterfs') {
    // statfs on a hung FUSE mount would hang doctor too: only a mount that answered a bounded probe is asked.
    const live = await glusterPoolLive(ctx, plan);
    results.push(live ? await spaceOf(ctx, 'the gluster pool', plan.storePath, 'store-space')
      : skip('store-space', `the gluster pool at ${plan.storePath} is not mounted and answering (see gluster-mount)`));
  } else results.push(skip('store-space', plan.backend === 'devicemapper' ? 'see thin-pool' : 'the backend options are not valid'));
  return results;
}

/** Whether this node's mount of the pool is there and answers a bounded probe. */
export async function glusterPoolLive(ctx: DoctorContext, plan: Extract<StorePlan, { backend: 'glusterfs' }>): Promise<boolean> {
  return (await glusterMounter(ctx, plan).health(plan.options.pool, plan.storePath).catch(() => undefined))?.state === 'live';
}

function glusterMounter(ctx: DoctorContext, plan: Extract<StorePlan, { backend: 'glusterfs' }>): GlusterMounter {
  return new GlusterMounter(ctx.runner, ctx.fs, {
    servers: plan.options.servers, mountOptions: plan.options.mountOptions, timeoutMs: plan.options.timeoutMs,
    logDir: '/dev/null', nodeId: ctx.settings.nodeId,
  }, silentLogger);
}

/** GlusterFS: glusterd and its peers, the pool volume started, this node's mount of it alive. */
export async function glusterChecks(ctx: DoctorContext, plan: StorePlan): Promise<CheckResult[]> {
  if (plan.backend !== 'glusterfs') return [];
  const { options, storePath } = plan;
  // The CLI writes a log of its own; doctor writes nothing, so that goes nowhere.
  const cli = new GlusterCli(ctx.runner, {
    socket: options.glusterdSocket, logFile: '/dev/null', timeoutMs: Math.min(options.timeoutMs, 10_000),
    servers: options.servers, nodeId: ctx.settings.nodeId,
  }, silentLogger);
  const results: CheckResult[] = [];
  try {
    const peers = await cli.peers();
    const down = peers.filter((p) => !p.connected);
    results.push(down.length === 0
      ? ok('gluster-peers', `glusterd answers; ${peers.length} peer(s) in the trusted pool, all connected`)
      : warn('gluster-peers', `peer(s) not connected: ${down.map((p) => p.hostname).join(', ')} (of ${peers.length})`,
        'start glusterd on those hosts and check the network between them (gluster pool list); replicas there are not written meanwhile'));
  } catch (err) {
    results.push(fail('gluster-peers', messageOf(err), `start glusterd on this node, or fix glusterfs.glusterdsocket (${options.glusterdSocket})`));
    results.push(skip('gluster-pool', 'glusterd does not answer'));
  }
  let poolStopped = false;
  if (results.length === 1) {
    try {
      const info = await cli.volumeInfo(options.pool);
      poolStopped = info !== undefined && !info.started;
      results.push(!info
        ? fail('gluster-pool', `the pool volume ${options.pool} does not exist on ${options.servers.join(', ')}`,
          `create and start it (gluster volume create ${options.pool} ...; gluster volume start ${options.pool}) or fix glusterfs.pool`)
        : info.started
          ? ok('gluster-pool', `pool volume ${options.pool} is started (${info.bricks.length} brick(s))`)
          : fail('gluster-pool', `pool volume ${options.pool} is ${info.status.toLowerCase()}, not started: no volume of this node can be reached`,
            `gluster volume start ${options.pool}`));
    } catch (err) {
      results.push(fail('gluster-pool', messageOf(err), 'check glusterd on this node (gluster volume info)'));
    }
  }
  const health = await glusterMounter(ctx, plan).health(options.pool, storePath);
  if (poolStopped && health.state !== 'live') {
    // The daemon drops a dead mount when it tries to heal it: either way the stopped pool is the cause.
    results.push(fail('gluster-mount', `pool ${options.pool} ${health.state === 'dead' ? `is mounted at ${storePath} but dead (${health.why})` : `is not mounted at ${storePath}`}: ` +
      'the pool volume is stopped', `gluster volume start ${options.pool}; the daemon mounts it again on its next use` +
      (health.state === 'dead' ? ` (unmount the dead mount first: umount -l ${storePath})` : '')));
  } else if (health.state === 'live') results.push(ok('gluster-mount', `pool ${options.pool} is mounted at ${storePath} and answers`));
  else if (health.state === 'dead') {
    results.push(fail('gluster-mount', `the mount of pool ${options.pool} at ${storePath} is dead: ${health.why}`,
      `start the pool volume if it is stopped, then unmount the dead mount (umount -l ${storePath}); the daemon mounts it again on its next use`));
  } else if (health.state === 'foreign') {
    results.push(fail('gluster-mount', `${health.entry.source} (${health.entry.fstype}) is mounted at ${storePath} instead of pool ${options.pool}`,
      `unmount it (umount ${storePath}); the daemon mounts the pool there`));
  } else {
    results.push(ctx.daemon
      ? fail('gluster-mount', `pool ${options.pool} is not mounted at ${storePath} although the daemon runs`,
        'restart the daemon, or look in its log for why the mount failed')
      : skip('gluster-mount', `pool ${options.pool} is not mounted at ${storePath} (the daemon mounts it at start)`));
  }
  return results;
}

/** devicemapper: the thin pool active, not read-only or flagged needs_check, with free data and metadata space. */
export async function thinPoolCheck(ctx: DoctorContext, plan: StorePlan): Promise<CheckResult[]> {
  if (plan.backend !== 'devicemapper') return [];
  const pool = plan.options.poolName;
  let text: string;
  try {
    const result = await ctx.runner.run('dmsetup', ['status', pool], { timeoutMs: 10_000, allowFailure: true });
    if (result.exitCode !== 0) {
      const why = result.stderr.trim().split('\n')[0] ?? `exit ${result.exitCode}`;
      return [/No such device|not exist/i.test(why) && !ctx.daemon
        ? warn('thin-pool', `thin pool ${pool} is not active (${why})`, 'the daemon activates or creates it at start: start the daemon')
        : fail('thin-pool', `thin pool ${pool} cannot be read: ${why}`,
          'check dm.thinpoolname and that device-mapper is available (dmsetup ls)')];
    }
    text = result.stdout;
  } catch (err) {
    return [fail('thin-pool', `dmsetup status ${pool} failed: ${messageOf(err)}`, 'install dmsetup and run doctor as root')];
  }
  let status;
  try {
    status = parsePoolStatus(text);
  } catch (err) {
    return [fail('thin-pool', `${pool} is not a thin pool: ${messageOf(err)}`, 'fix dm.thinpoolname')];
  }
  const blockSectors = status.failed ? 0 : Math.max(1, Math.round(status.lengthSectors / Math.max(1, status.totalDataBlocks)));
  const health = evaluatePoolHealth(pool, status, blockSectors);
  const facts = Object.entries(health.facts).filter(([k]) => k !== 'poolHealth').map(([k, v]) => `${k} ${v}`).join(', ');
  if (health.condition === 'healthy') return [ok('thin-pool', `thin pool ${pool} is healthy: ${facts}`)];
  const [what, todo] = POOL_ADVICE[health.condition];
  const message = `thin pool ${pool} ${what}${facts ? ` (${facts})` : ''}`;
  return [health.condition === 'nearly-full' ? warn('thin-pool', message, todo) : fail('thin-pool', message, todo)];
}

const POOL_ADVICE: Record<Exclude<PoolCondition, 'healthy'>, [string, string]> = {
  'nearly-full': ['is nearly full: stowage makes no new volumes or snapshots while less than 10% of its data or metadata space is free',
    'remove volumes or snapshots you no longer need, or extend the pool'],
  'out-of-data-space': ['is out of data space: writes to its volumes fail',
    'remove volumes or snapshots you no longer need, or extend the data device and reload the pool'],
  'read-only': ['is read-only (a metadata error, or its metadata space is exhausted)', 'check the kernel log and the metadata device'],
  'needs-check': ['is flagged needs_check after a metadata error',
    'deactivate it, run thin_check (and thin_repair) on its metadata device, then start stowage again'],
  failed: ['has failed (dmsetup status reports Fail, usually after metadata I/O errors)',
    'check the kernel log, deactivate the pool and repair its metadata with thin_check/thin_repair'],
};
