import { join } from 'node:path';
import { mountHolding, otherNodeRecords } from '../../../backends/vfs/store-layout.js';
import { decideSharing } from '../../../backends/vfs/store-sharing.js';
import { DEFAULT_CLUSTER_SETTINGS } from '../../../core/cluster/cluster.js';
import { clusterPaths, containersUnknown, describeUse, type InvalidNodeRecord, type NodeView } from '../../../core/cluster/node-record.js';
import { errnoCode, messageOf } from '../../../core/errors.js';
import { silentLogger } from '../../../core/logger.js';
import { MemberReader } from '../../../core/cluster/member-reader.js';
import { fail, ok, seconds, skip, warn, type CheckResult, type DoctorContext } from './check.js';
import { glusterPoolLive } from './storage-checks.js';
import type { StorePlan } from './store-plan.js';

/**
 * Beyond this a node's clock eats the margin the cluster locks keep for clock differences (one
 * fifth of their lifetime), so a lapsed lock may be broken while its holder still trusts it.
 */
const CLOCK_FAIL_MS = DEFAULT_CLUSTER_SETTINGS.lockTtlMs / 5;
const CLOCK_WARN_MS = DEFAULT_CLUSTER_SETTINGS.skewWarnMs;

/**
 * The store shared or not, and whether that matches what the store shows (mount type, other nodes' records).
 * `absent`: why there is no store to look at (see storeCheck); an empty mount point shows no evidence either way.
 */
export async function sharingCheck(ctx: DoctorContext, plan: StorePlan, absent?: string): Promise<CheckResult> {
  if (plan.backend === 'glusterfs') return ok('store-sharing', `shared by design: gluster pool ${plan.options.pool} (scope global)`);
  if (plan.backend === 'devicemapper') return ok('store-sharing', 'node-local by design: devicemapper thin pool (scope local)');
  if (plan.backend !== 'vfs') return skip('store-sharing', 'the backend options are not valid');
  if (absent) return skip('store-sharing', absent);
  const { storePath, clusterDir, shared } = plan;
  const decision = decideSharing(shared, {
    mount: await mountHolding(ctx.fs, storePath),
    otherNodes: await otherNodeRecords(ctx.fs, [clusterPaths(clusterDir).members, clusterPaths(clusterDir).legacyNodes], ctx.settings.nodeId).catch(() => []),
    otherCreators: [],
  });
  const evidence = decision.evidence.join('; ');
  const runningScope = ctx.daemon ? String(ctx.daemon.info.scope ?? '') : undefined;
  if (shared === false && evidence) {
    return fail('store-sharing', `vfs.shared=false, but the store at ${storePath} is used by more than this node: ${evidence}`,
      'declare --opt vfs.shared=true on every node of the store (the daemon refuses to start so); if the other nodes are gone ' +
      `for good, stowage node forget them (or delete their records in ${clusterPaths(clusterDir).members})`);
  }
  if (shared === 'auto' && evidence) {
    const stale = runningScope === 'local' ? ' The running daemon started before that and reports scope local: restart it.' : '';
    return warn('store-sharing', `the store at ${storePath} is shared (${evidence}) but vfs.shared is not declared; ` +
      `a node that starts first or alone finds no evidence and reports scope local.${stale}`,
      'declare --opt vfs.shared=true (STOWAGE_OPTS) on every node of the store');
  }
  if (shared === true) return ok('store-sharing', `declared shared${evidence ? ` (${evidence})` : '; no other node has joined yet'}`);
  return ok('store-sharing', `node-local: no other node's record and no network filesystem under ${storePath}`);
}

interface ClusterView {
  nodes: NodeView[];
  invalid: InvalidNodeRecord[];
  /** Where the views came from, for the messages. */
  source: string;
}

/**
 * Node records from the daemon, or read from the shared directory (read-only) when none runs,
 * with the daemon's own reader: the same checks, the same retries, and mount markers of a node
 * without a record counted as a stopped node, as a remove counts them.
 */
async function clusterView(ctx: DoctorContext, plan: StorePlan): Promise<ClusterView | string> {
  if (ctx.daemon?.nodes) return { ...ctx.daemon.nodes, source: 'the daemon' };
  if (plan.backend !== 'vfs' && plan.backend !== 'glusterfs') return 'the backend keeps no cluster state';
  if (plan.backend === 'glusterfs' && !(await glusterPoolLive(ctx, plan))) return `the gluster pool is not mounted and answering at ${plan.storePath}`;
  const dir = clusterPaths(plan.clusterDir).members;
  const listed = await ctx.fs.readdir(dir).then(() => undefined, (err: unknown) =>
    errnoCode(err) === 'ENOENT' ? `no node records in ${dir}` : `cannot read ${dir}: ${messageOf(err)}`);
  if (listed) return listed;
  const reader = new MemberReader(ctx.fs, plan.clusterDir, { now: () => ctx.now() }, ctx.settings.staleAfterMs, silentLogger);
  let read: Awaited<ReturnType<MemberReader['read']>>;
  try {
    read = await reader.read();
  } catch (err) {
    return `cannot read the cluster directory ${plan.clusterDir}: ${messageOf(err)}`;
  }
  // Heartbeats are stamped by the storage's clock: read them on it, through this node's last known offset.
  const own = read.views.find((v) => v.record.nodeId === ctx.settings.nodeId);
  const now = ctx.now() - (own?.record.clockOffsetMs ?? 0);
  const nodes = read.views.map((view): NodeView => {
    if (!Number.isFinite(view.heartbeatAgeMs)) return view;
    const age = Math.max(0, now - Date.parse(view.lastHeartbeat));
    return { ...view, heartbeatAgeMs: age, stale: age > ctx.settings.staleAfterMs };
  });
  return { nodes, invalid: read.invalid, source: `the records in ${dir}` };
}

// A node whose marker directory cannot be read may mount anything, as a remove counts it.
const usesAnything = (node: NodeView) => node.markersUnreadable !== undefined ||
  node.mounted.some((v) => describeUse({ mounts: true, containers: node.record.containers }, v) !== undefined) ||
  Object.values(node.record.containers).some((c) => c.length > 0);

/** Other nodes' heartbeats (stale nodes named) and clock offsets against the shared store. */
export async function clusterChecks(ctx: DoctorContext, plan: StorePlan): Promise<CheckResult[]> {
  const view = await clusterView(ctx, plan);
  if (typeof view === 'string') return [skip('nodes', view), skip('clock', view)];
  const others = view.nodes.filter((n) => n.record.nodeId !== ctx.settings.nodeId);
  const stale = others.filter((n) => n.stale);
  // A node with mount markers and no record has no heartbeat to show (its age is Infinity, or null through JSON).
  const describe = (n: NodeView) => `${n.record.nodeId} (${Number.isFinite(n.heartbeatAgeMs) ? `last heartbeat ${seconds(n.heartbeatAgeMs)} ago` : 'no node record, only mount markers'}` +
    `${usesAnything(n) ? ', still referencing volumes' : ''})`;
  const results: CheckResult[] = [];
  const invalid = view.invalid.length > 0 ? `; invalid records skipped: ${view.invalid.map((i) => `${i.file} (${i.problem})`).join(', ')}` : '';
  if (stale.length > 0) {
    const blocking = stale.filter(usesAnything);
    const message = `stale node(s), silent for more than ${seconds(ctx.settings.staleAfterMs)}: ${stale.map(describe).join(', ')}${invalid}`;
    const first = stale[0]!.record.nodeId;
    const advice = `start stowage on ${first} again; if it is gone for good: stowage node forget ${first}` +
      (blocking.length > 0 ? ' (until then the volumes it references cannot be removed without --force)' : '');
    results.push(blocking.length > 0 ? fail('nodes', message, advice) : warn('nodes', message, advice));
  } else if (others.some(containersUnknown)) {
    const blind = others.filter(containersUnknown);
    results.push(fail('nodes', `node(s) whose Docker engine has not answered since stowage started there: ` +
      `${blind.map((n) => `${n.record.nodeId} (${n.record.docker.error ?? 'no answer'})`).join(', ')}; which volumes their ` +
      `containers use is unknown, so every volume remove is refused${invalid}`,
    `start Docker on ${blind[0]!.record.nodeId}, or point its --docker-host at the engine's socket`));
  } else if (invalid) {
    results.push(warn('nodes', `${others.length} other node(s), none stale${invalid}`, 'remove or fix the invalid files; stowage never reads them'));
  } else {
    results.push(ok('nodes', others.length === 0 ? 'no other node has a record' : `${others.length} other node(s), all sending heartbeats: ` +
      others.map((n) => n.record.nodeId).join(', ')));
  }
  const self = view.nodes.find((n) => n.record.nodeId === ctx.settings.nodeId);
  const offsets = view.nodes.filter((n) => !n.stale || n === self).map((n) => ({
    node: n.record.nodeId, offset: n.record.clockOffsetMs, self: n === self,
  }));
  const worst = offsets.filter((o) => Math.abs(o.offset) > CLOCK_WARN_MS);
  const words = (o: { node: string; offset: number; self: boolean }) =>
    `${o.node}${o.self ? ' (this node)' : ''} ${o.offset >= 0 ? '+' : ''}${(o.offset / 1000).toFixed(1)} s`;
  const selfNote = self ? '' : ' (this node has no record: its offset is measured once its daemon runs)';
  const asOf = ctx.daemon ? '' : ' as of each node\'s last heartbeat';
  if (worst.length === 0) {
    results.push(ok('clock', `clock offsets against the shared store within ${CLOCK_WARN_MS / 1000} s${asOf}: ` +
      (offsets.map(words).join(', ') || 'none measured') + selfNote));
  } else {
    const message = `clock offset against the shared store${asOf}: ${worst.map(words).join(', ')}`;
    const advice = `enable time synchronisation (chrony, systemd-timesyncd) on ${worst.map((o) => o.node).join(', ')}`;
    results.push(worst.some((o) => Math.abs(o.offset) > CLOCK_FAIL_MS)
      ? fail('clock', `${message}: beyond ${CLOCK_FAIL_MS / 1000} s cluster locks can lapse unnoticed`, advice)
      : warn('clock', message, advice));
  }
  return results;
}
