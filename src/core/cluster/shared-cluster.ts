import { hostname } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../atomic-file.js';
import { isoTime, type SharedClock } from '../clock.js';
import { ErrorCodes, StowageError, messageOf } from '../errors.js';
import type { FsPort } from '../fs-port.js';
import { isLocalPath } from '../local-fs.js';
import type { Logger } from '../logger.js';
import { validateNodeId } from '../names.js';
import type { ContainerReferences, ContainerScan } from '../container-references.js';
import type { Cluster, ClusterSettings, LocalMounts } from './cluster.js';
import { ClusterLocks } from './cluster-lock.js';
import type { Lease } from './lease.js';
import { deleteNodeFiles, settleLayout } from './layout-settle.js';
import { NodeMarkers } from './node-markers.js';
import { assertNodeIdFree, learnStorageClock, ownRecordWatch, rootInstance } from './node-instance.js';
import { MemberReader, entryOfNode } from './member-reader.js';
import { withMountLock, type MountLockParts } from './mount-lock.js';
import { assertNoLiveMount } from './forced-remove.js';
import { MEMBERS_DIR, inNodeDir } from './node-dir.js';
import { settlesWithin } from '../settles-within.js';
import { RestoreClaims } from './restore-claims.js';
import { clusterPaths, containersUnknown, describeUse, invalidRecordNotForgotten, type InvalidNodeRecord, type NodeRecord, type NodeView } from './node-record.js';

/** How long a scan can answer for the engine while the engine reports no container change. */
const CURRENT_SCAN_MS = 1_000;

const seconds = (ms: number) => `${Math.round(ms / 1000)} s`;

/** How a node's last heartbeat reads in messages. */
const heartbeat = (node: NodeView) => Number.isFinite(node.heartbeatAgeMs)
  ? `last heartbeat ${seconds(node.heartbeatAgeMs)} ago` : 'no node record, only mount markers';

/**
 * Membership, references and locks kept in a directory every node sees (layout 2, see
 * CLUSTER_LAYOUT). Each node owns one record file (`members/<id>.json`) and its marker directory
 * (`mounts/<id>/`); nobody writes another node's files except `forget` and the migration of a
 * stale layout-1 record.
 */
export class SharedCluster implements Cluster {
  readonly enabled = true;
  private readonly paths: ReturnType<typeof clusterPaths>;
  private readonly markers: NodeMarkers;
  private readonly locks: ClusterLocks;
  private mountLock?: MountLockParts;
  private readonly reader: MemberReader;
  readonly restoreClaims: RestoreClaims;
  private readonly docker?: ContainerReferences;
  private invalid: InvalidNodeRecord[] = [];
  private stopped = false;
  private mounts: LocalMounts = { mountedVolumes: () => [], count: () => 0 };
  private scan: ContainerScan = { reachable: false, error: 'not asked yet', byVolume: {} };
  /** When the engine last listed this node's containers; undefined until it first answers. */
  private listedAt?: string;
  /** Scans started, and the number of the latest one whose answer is in `scan`. */
  private scansStarted = 0;
  private scanApplied = 0;
  /** The engine's change mark and the monotonic time when the scan in `scan` began, if it answered. */
  private scanMark?: { mark: number; at: number };
  private view: NodeView[] = [];
  private timer?: NodeJS.Timeout;
  private pending?: NodeJS.Timeout;
  private publishing: Promise<void> = Promise.resolve();
  /** A publish waiting for the one in progress; it has not read the scan yet. */
  private queued?: Promise<void>;
  private readonly startedAt: string;
  private instance?: string;
  /** Two daemons under one id that both passed the start check (node-instance.ts). */
  private checkOwnRecord: () => Promise<void> = async () => {};

  constructor(
    private readonly fs: FsPort,
    private readonly dir: string,
    private readonly nodeId: string,
    private readonly clock: SharedClock,
    private readonly settings: ClusterSettings,
    private readonly log: Logger,
    engine?: ContainerReferences,
    /** Asked before this node's record is written, or its marker directory made again (Backend.assertClusterStore). */
    private readonly storeGuard?: () => Promise<void>,
  ) {
    this.paths = clusterPaths(dir);
    this.markers = new NodeMarkers(fs, join(this.paths.mounts, nodeId), nodeId, log, storeGuard);
    this.locks = new ClusterLocks(fs, this.paths.locks, nodeId, clock,
      { ttlMs: settings.lockTtlMs, waitMs: settings.lockWaitMs }, (m) => log.warn(m));
    this.reader = new MemberReader(fs, dir, clock, settings.staleAfterMs, log);
    this.restoreClaims = new RestoreClaims(fs, dir, nodeId);
    if (engine?.configured) this.docker = engine;
    this.startedAt = new Date().toISOString();
  }

  async start(mounts: LocalMounts): Promise<void> {
    this.mounts = mounts;
    for (const dir of [this.paths.members, this.paths.mounts, this.paths.locks]) await this.fs.mkdir(dir, { recursive: true });
    await settleLayout({ fs: this.fs, dir: this.dir, nodeId: this.nodeId, clock: this.clock, staleAfterMs: this.settings.staleAfterMs, log: this.log });
    // Before anything is written: a marker directory another machine replaced refuses the start.
    await this.markers.prepare();
    // The record publishes this clock's offset from the storage's, and the id check measures ages on it.
    await learnStorageClock(this.fs, this.paths.members, this.clock);
    if (this.settings.stateRoot !== undefined) {
      const root = await rootInstance(this.fs, this.settings.stateRoot);
      assertNodeIdFree((await this.reader.read()).views, this.nodeId, root.kept, this.settings.staleAfterMs);
      this.instance = await root.make();
      this.checkOwnRecord = ownRecordWatch(this.fs, join(this.paths.members, `${this.nodeId}.json`), this.instance, this.log);
    }
    await this.rescan();
    await this.restoreClaims.sweepTemps().then((n) => n > 0 && this.log.info(`removed ${n} leftover temp file(s) of restore claims`),
      (err: unknown) => this.log.warn(`could not clean the temp files of restore claims: ${messageOf(err)}`));
    await this.publish();
    // The record first: markers of a node without one read as a node that stopped.
    await this.markers.sync(this.mounts, true);
    await this.refresh();
    this.timer = setInterval(() => void this.beat(), this.settings.heartbeatMs);
    this.timer.unref();
    this.docker?.onEvent(() => this.changed(true));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.pending);
    await this.publishing;
  }

  /**
   * A heartbeat publishes the engine's answer if it comes within this time, else the last one
   * and the new answer when it lands: an engine that hangs (its scan gives up after seconds)
   * must not hold back the heartbeat that tells other nodes this one is alive.
   */
  private get scanWaitMs(): number {
    return Math.min(1_000, this.settings.heartbeatMs / 2);
  }

  private async beat(): Promise<void> {
    try {
      await this.checkOwnRecord();
      const scanning = this.rescan();
      if (await settlesWithin(scanning, this.scanWaitMs)) {
        await scanning;
      } else {
        void scanning.then(() => (this.stopped ? undefined : this.publish())).catch((err: unknown) =>
          this.log.error(`publishing node ${this.nodeId} after a slow engine answer failed: ${messageOf(err)}`));
      }
      await this.publish();
      await this.markers.sync(this.mounts, false);
      await this.refresh();
    } catch (err) {
      this.log.error(`heartbeat of node ${this.nodeId} failed: ${messageOf(err)}`);
    }
  }

  markMounted(volume: string): Promise<void> {
    return this.markers.markMounted(volume);
  }

  markUnmounted(volume: string): Promise<void> {
    return this.markers.markUnmounted(volume);
  }

  /**
   * Asks the engine which containers use which volumes. When it does not answer, the last list
   * it gave stays: containers cannot be removed while their engine is down, so that list is
   * still true, and an empty one would let another node delete a volume they reference.
   * Scans overlap (heartbeats, engine events, removes) and an engine under load can answer them
   * out of order: an answer to a scan started before the one last applied is older news and is
   * dropped, or a container created in between would vanish from the record until the next scan.
   */
  private async rescan(): Promise<ContainerScan> {
    if (!this.docker) return this.scan;
    const started = ++this.scansStarted;
    const mark = this.docker.changeMark?.();
    const at = performance.now();
    const fresh = await this.docker.scan();
    if (started < this.scanApplied) return this.scan;
    this.scanApplied = started;
    this.scanMark = fresh.reachable && mark !== undefined ? { mark, at } : undefined;
    if (fresh.reachable) {
      if (!this.listedAt && started > 1) this.log.info('the Docker engine answers now: other nodes can remove volumes again');
      this.listedAt = isoTime(Date.now());
      this.scan = fresh;
    } else {
      if (!this.listedAt && started === 1) {
        this.log.warn(`the Docker engine does not answer (${fresh.error ?? 'no answer'}): until it does, which volumes this ` +
          'node\'s containers use is unknown, and every volume remove in the cluster is refused');
      }
      this.scan = { reachable: false, error: fresh.error, byVolume: this.scan.byVolume };
    }
    return this.scan;
  }

  /**
   * Whether the last scan is still the engine's answer: the engine has reported no container
   * change since it began (a remove right after another, `docker volume rm a b c`, need not ask
   * again). Only for a short while: an engine drops events for a client that falls far behind.
   */
  private scanIsCurrent(): boolean {
    const mark = this.docker?.changeMark?.();
    return mark !== undefined && this.scanMark?.mark === mark && performance.now() - this.scanMark.at < CURRENT_SCAN_MS;
  }

  /** Publishes soon, coalescing bursts (a container event storm). */
  changed(rescanDocker = false): void {
    if (this.pending || this.stopped) return;
    this.pending = setTimeout(() => {
      this.pending = undefined;
      void (async () => {
        if (rescanDocker) await this.rescan();
        await this.publish();
      })().catch((err: unknown) => this.log.error(`publishing node ${this.nodeId} failed: ${messageOf(err)}`));
    }, 200);
  }

  /**
   * Publishes this node's record. A caller's change is in the record when its promise resolves;
   * callers arriving while a write is queued and not yet started share that write.
   */
  private publish(): Promise<void> {
    if (this.queued) return this.queued;
    const next = this.publishing.then(async () => {
      this.queued = undefined;
      const record: NodeRecord = {
        format: 2,
        nodeId: this.nodeId,
        version: this.settings.version,
        host: hostname(),
        pid: process.pid,
        startedAt: this.startedAt,
        ...(this.instance !== undefined ? { instance: this.instance } : {}),
        clockOffsetMs: this.clock.localOffsetMs,
        containers: this.scan.byVolume,
        docker: this.docker
          ? { configured: true, reachable: this.scan.reachable, error: this.scan.error, listedAt: this.listedAt }
          : { configured: false, reachable: false, error: 'no Docker engine configured' },
      };
      // A store replaced under this daemon (unmounted, made again by another node) gets no record from it.
      await this.storeGuard?.();
      const before = Date.now();
      // Through a descriptor: never into what a symlink swapped in for members/ (or above it) leads to.
      const { mtimeMs } = await inNodeDir(this.fs, this.paths.members, async ({ at }) => {
        await writeFileAtomic(this.fs, at(`${this.nodeId}.json`), JSON.stringify(record), { durable: false });
        return this.fs.stat(at(`${this.nodeId}.json`));
      }, MEMBERS_DIR);
      const offset = this.clock.observe(before, Date.now(), mtimeMs);
      if (Math.abs(offset - record.clockOffsetMs) > this.settings.skewWarnMs) {
        this.log.warn(`node ${this.nodeId}'s clock is ${seconds(offset)} off the shared storage's clock`);
      }
    });
    this.publishing = next.catch(() => undefined);
    this.queued = next;
    return next;
  }

  private async refresh(): Promise<NodeView[]> {
    const { views, invalid } = await this.reader.read();
    this.view = views;
    this.invalid = invalid;
    return views;
  }

  /**
   * The other nodes, read afresh, for the checks that skip this node anyway (its own mounts and
   * containers are known here): its record and markers are not read, which on a store of few
   * nodes is half the reading a remove does. This node's entry in the view stays as the last
   * full refresh (each heartbeat) left it.
   */
  private async refreshOthers(): Promise<NodeView[]> {
    const { views, invalid } = await this.reader.read({ except: this.nodeId });
    const self = this.view.filter((n) => n.record.nodeId === this.nodeId);
    this.view = [...views, ...self].sort((a, b) => a.record.nodeId.localeCompare(b.record.nodeId));
    this.invalid = [...invalid, ...this.invalid.filter((entry) => entryOfNode(entry.file, this.nodeId))];
    return views;
  }

  invalidNodes(): InvalidNodeRecord[] {
    return this.invalid;
  }

  withLock<T>(name: string, task: (lease: Lease) => Promise<T>): Promise<T> {
    return this.locks.withLock(name, task);
  }

  withMountLock<T>(name: string, task: (lease: Lease) => Promise<T>): Promise<T> {
    // Built at the first mount, once the backend has said which of its paths are local.
    this.mountLock ??= { locks: this.locks, markers: this.markers, mounts: () => this.mounts, log: this.log, lockFree: isLocalPath(this.fs, this.paths.locks) };
    return withMountLock(this.mountLock, name, task);
  }

  /** How another node uses the volume: its marker and the containers its record names. */
  private useOf(node: NodeView, name: string): string | undefined {
    return describeUse({ mounts: node.mounted.includes(name), containers: node.record.containers, markersUnreadable: node.markersUnreadable }, name);
  }

  async assertRemovable(name: string, options: { force: boolean }): Promise<void> {
    if (options.force) return assertNoLiveMount(name, await this.refreshOthers(), heartbeat);
    const live: string[] = [];
    const stale: string[] = [];
    /** Nodes whose engine has never listed its containers: any of them may use the volume. */
    const unknown: string[] = [];
    if (this.docker) {
      const scan = this.scanIsCurrent() ? this.scan : await this.rescan();
      const here = scan.byVolume[name] ?? [];
      if (here.length > 0) {
        live.push(`${this.nodeId} (this node): ${here.map((c) => `container ${c.name} (${c.id.slice(0, 12)}, ${c.state})`).join(', ')}`);
      }
      if (!this.listedAt) unknown.push(`${this.nodeId} (this node): ${scan.error ?? 'no answer'}`);
    }
    for (const node of await this.refreshOthers()) {
      const use = this.useOf(node, name);
      if (node.stale && (use || containersUnknown(node))) {
        stale.push(`${node.record.nodeId} (${heartbeat(node)}): ${use ?? 'containers unknown, its Docker engine never answered'}`);
      } else if (use) {
        live.push(`${node.record.nodeId}: ${use}`);
      } else if (containersUnknown(node)) {
        unknown.push(`${node.record.nodeId}: ${node.record.docker.error ?? 'no answer'}`);
      }
    }
    if (live.length > 0) {
      throw new StowageError(ErrorCodes.VOLUME_IN_USE,
        `volume ${name} is still used on ${live.join('; ')}. Stop what uses it there (its containers: docker rm; a mount by hand on that node; ` +
        `a backup or snapshot reading it there ends by itself), then remove the volume again`, { volume: name });
    }
    if (unknown.length > 0) {
      throw new StowageError(ErrorCodes.VOLUME_IN_USE,
        `cannot tell whether containers use volume ${name}: the Docker engine has not answered since stowage started on ` +
        `${unknown.join('; ')}. Start Docker there and remove the volume again (on a node that runs no containers, ` +
        'configure no Docker engine)',
        { volume: name, remedies: [{ action: 'force-remove', volume: name }] });
    }
    if (stale.length > 0) {
      const first = stale[0]!.split(' ')[0];
      throw new StowageError(ErrorCodes.VOLUME_IN_USE,
        `volume ${name} is referenced by node(s) that stopped sending heartbeats: ${stale.join('; ')}`,
        { volume: name, remedies: [{ action: 'forget-node', node: first }, { action: 'force-remove', volume: name }] });
    }
  }

  async usesElsewhere(name: string): Promise<string[]> {
    const uses: string[] = [];
    for (const node of await this.refreshOthers()) {
      const use = this.useOf(node, name);
      if (use) uses.push(`${node.record.nodeId}${node.stale ? ` (${heartbeat(node)})` : ''}: ${use}`);
    }
    return uses;
  }

  usage(name: string): Record<string, string> {
    const users: string[] = [];
    const mountedOn: string[] = [];
    for (const node of this.view) {
      const self = node.record.nodeId === this.nodeId;
      const mounts = self ? this.mounts.count(name) : node.mounted.includes(name);
      const use = self ? describeUse({ mounts, containers: this.scan.byVolume }, name) : this.useOf(node, name);
      if (use) users.push(`${node.record.nodeId}${node.stale ? ' (stale)' : ''}: ${use}`);
      if (mounts) mountedOn.push(node.record.nodeId);
    }
    return { usedBy: users.length > 0 ? users.join('; ') : 'no node', mountedOn: mountedOn.length > 0 ? mountedOn.join(', ') : 'no node' };
  }

  nodes(): Promise<NodeView[]> {
    return this.refresh();
  }

  /** Drops a stopped node: its mount markers first, then its record (a crash between leaves a record to forget again). */
  async forget(nodeId: string): Promise<void> {
    validateNodeId(nodeId);
    const node = (await this.refresh()).find((n) => n.record.nodeId === nodeId);
    if (!node) {
      // Listed as invalid: not read, so neither known stale nor known to be stowage's to delete.
      const invalid = this.invalid.find((entry) => entry.file === `${nodeId}.json` || entry.file.endsWith(`/${nodeId}.json`));
      if (invalid) throw invalidRecordNotForgotten(nodeId, invalid, this.dir);
      throw new StowageError(ErrorCodes.NODE_NOT_FOUND, `no node ${nodeId} is known`, { node: nodeId, remedies: [{ action: 'list-nodes' }] });
    }
    if (nodeId === this.nodeId || !node.stale) {
      throw new StowageError(ErrorCodes.INVALID_REQUEST,
        `node ${nodeId} sent a heartbeat ${seconds(node.heartbeatAgeMs)} ago; stop its stowage daemon first, ` +
        `then forget it once it is stale (after ${seconds(this.settings.staleAfterMs)})`, { node: nodeId });
    }
    await deleteNodeFiles(this.fs, this.dir, nodeId);
    this.log.warn(`forgot node ${nodeId} and its references`);
    await this.refresh();
  }

  info(): Record<string, string> {
    const offset = this.clock.localOffsetMs;
    const skewed = this.view.filter((n) => Math.abs(n.record.clockOffsetMs) > this.settings.skewWarnMs);
    return {
      cluster: `${this.view.length} node(s)`,
      staleNodes: this.view.filter((n) => n.stale).map((n) => n.record.nodeId).join(', ') || 'none',
      clockOffset: `${offset} ms`,
      clockSkew: Math.abs(offset) > this.settings.skewWarnMs
        ? `this node's clock is ${seconds(offset)} off the shared storage's clock; fix its time synchronisation`
        : 'ok',
      skewedNodes: skewed.map((n) => `${n.record.nodeId} (${seconds(n.record.clockOffsetMs)})`).join(', ') || 'none',
      dockerEngine: this.docker ? (this.scan.reachable ? 'reachable' : `unreachable: ${this.scan.error}`) : 'not configured',
    };
  }
}

