import { constants } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../atomic-file.js';
import { isoTime, type SharedClock } from '../clock.js';
import { ErrorCodes, StowageError, errnoCode, messageOf } from '../errors.js';
import type { FsPort } from '../fs-port.js';
import type { Logger } from '../logger.js';
import { isValidNodeId, validateNodeId } from '../names.js';
import { parseRecordText } from '../schema/parse-record.js';
import type { ContainerReferences, ContainerScan } from '../container-references.js';
import type { Cluster, ClusterSettings, MountSnapshot } from './cluster.js';
import { ClusterLocks } from './cluster-lock.js';
import type { Lease } from './lease.js';
import { describeUse, nodeRecordSchema, type InvalidNodeRecord, type NodeRecord, type NodeView } from './node-record.js';

/** A node record is a few KiB even with many mounts; anything far larger is not one. */
const MAX_RECORD_BYTES = 4 * 1024 * 1024;
/** How long a record readdir lists may answer ENOENT before it counts as invalid (see openListedRecord). */
const RECORD_REOPEN_MS = 3_000;

const seconds = (ms: number) => `${Math.round(ms / 1000)} s`;

/**
 * Membership, references and locks kept in a directory every node sees. Each node owns one
 * record file (`nodes/<id>.json`); nobody writes another node's file except `forget`.
 */
export class SharedCluster implements Cluster {
  readonly enabled = true;
  private readonly nodesDir: string;
  private readonly locks: ClusterLocks;
  private readonly docker?: ContainerReferences;
  private invalid: InvalidNodeRecord[] = [];
  private stopped = false;
  /** Files already reported as invalid, so each is logged once rather than every heartbeat. */
  private readonly reported = new Set<string>();
  private mounts: MountSnapshot = () => ({});
  private scan: ContainerScan = { reachable: false, error: 'not asked yet', byVolume: {} };
  private view: NodeView[] = [];
  private timer?: NodeJS.Timeout;
  private pending?: NodeJS.Timeout;
  private publishing: Promise<void> = Promise.resolve();
  /** A publish waiting for the one in progress; it has not read the mounts yet. */
  private queued?: Promise<void>;
  private readonly startedAt: string;

  constructor(
    private readonly fs: FsPort,
    dir: string,
    private readonly nodeId: string,
    private readonly clock: SharedClock,
    private readonly settings: ClusterSettings,
    private readonly log: Logger,
    engine?: ContainerReferences,
  ) {
    this.nodesDir = join(dir, 'nodes');
    this.locks = new ClusterLocks(fs, join(dir, 'locks'), nodeId, clock,
      { ttlMs: settings.lockTtlMs, waitMs: settings.lockWaitMs }, (m) => log.warn(m));
    if (engine?.configured) this.docker = engine;
    this.startedAt = new Date().toISOString();
  }

  async start(mounts: MountSnapshot): Promise<void> {
    this.mounts = mounts;
    await this.fs.mkdir(this.nodesDir, { recursive: true });
    await this.fs.mkdir(join(this.nodesDir, '..', 'locks'), { recursive: true });
    if (this.docker) this.scan = await this.docker.scan();
    // The first write teaches the clock offset that the second one publishes.
    await this.publish();
    await this.publish();
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

  private async beat(): Promise<void> {
    try {
      if (this.docker) this.scan = await this.docker.scan();
      await this.publish();
      await this.refresh();
    } catch (err) {
      this.log.error(`heartbeat of node ${this.nodeId} failed: ${messageOf(err)}`);
    }
  }

  /** Publishes soon, coalescing bursts (a container event storm, many mounts at once). */
  changed(rescanDocker = false): void {
    if (this.pending || this.stopped) return;
    this.pending = setTimeout(() => {
      this.pending = undefined;
      void (async () => {
        if (rescanDocker && this.docker) this.scan = await this.docker.scan();
        await this.publish();
      })().catch((err: unknown) => this.log.error(`publishing node ${this.nodeId} failed: ${messageOf(err)}`));
    }, 200);
  }

  /** Publishes now: a mount is not handed out before every node can see it. */
  publishNow(): Promise<void> {
    return this.publish();
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
        format: 1,
        nodeId: this.nodeId,
        version: this.settings.version,
        host: hostname(),
        pid: process.pid,
        startedAt: this.startedAt,
        clockOffsetMs: this.clock.localOffsetMs,
        mounts: this.mounts(),
        containers: this.scan.byVolume,
        docker: this.docker ? { reachable: this.scan.reachable, error: this.scan.error } : { reachable: false, error: 'no Docker engine configured' },
      };
      const file = join(this.nodesDir, `${this.nodeId}.json`);
      const before = Date.now();
      await writeFileAtomic(this.fs, file, JSON.stringify(record), { durable: false });
      const { mtimeMs } = await this.fs.stat(file);
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
    const files = await this.fs.readdir(this.nodesDir);
    const now = this.clock.now();
    const views: NodeView[] = [];
    const invalid: InvalidNodeRecord[] = [];
    for (const file of files) {
      if (file.startsWith('.')) continue; // temp files of writers in progress
      const id = file.endsWith('.json') ? file.slice(0, -'.json'.length) : '';
      const path = join(this.nodesDir, file);
      try {
        if (!isValidNodeId(id)) throw new Error('the file name is not <node id>.json');
        const handle = await this.openListedRecord(path, file);
        if (!handle) continue;
        let text: string;
        let st: Awaited<ReturnType<typeof handle.stat>>;
        try {
          st = await handle.stat();
          if (!st.isFile()) throw new Error('not a regular file');
          if (st.size > MAX_RECORD_BYTES) throw new Error(`larger than ${MAX_RECORD_BYTES} bytes`);
          text = await handle.readFile('utf8');
        } finally {
          await handle.close();
        }
        const record: NodeRecord = parseRecordText(nodeRecordSchema, text, `node record ${file}`);
        if (record.nodeId !== id) throw new Error(`it names node ${record.nodeId}, not ${id}`);
        const age = Math.max(0, now - st.mtimeMs);
        views.push({ record, lastHeartbeat: isoTime(st.mtimeMs), heartbeatAgeMs: age, stale: age > this.settings.staleAfterMs });
      } catch (err) {
        if (errnoCode(err) === 'ENOENT') continue;
        const problem = errnoCode(err) === 'ELOOP' ? 'a symbolic link, not a record' : messageOf(err);
        invalid.push({ file: file.slice(0, 200), problem });
        if (!this.reported.has(file)) {
          this.reported.add(file);
          this.log.warn(`skipping invalid node record ${JSON.stringify(file.slice(0, 200))} in ${this.nodesDir}: ${problem}`);
        }
      }
    }
    this.view = views.sort((a, b) => a.record.nodeId.localeCompare(b.record.nodeId));
    this.invalid = invalid;
    return this.view;
  }

  /**
   * Opens a record readdir just listed. Its writer replaces it by rename at every heartbeat and
   * mount, which never leaves the name missing; but a GlusterFS client that cached the entry
   * answers ENOENT for the replaced file until its cache lapses (about a second). Skipping the
   * record then would hide that node's mounts from a remove, so ENOENT is retried until the open
   * works or a fresh listing no longer has the name (the node was forgotten); undefined then.
   */
  private async openListedRecord(path: string, file: string): Promise<Awaited<ReturnType<FsPort['open']>> | undefined> {
    const deadline = Date.now() + RECORD_REOPEN_MS;
    for (;;) {
      try {
        // O_NOFOLLOW: a symlink planted in the nodes directory is refused (ELOOP), never read.
        return await this.fs.open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT') throw err;
        if (!(await this.fs.readdir(this.nodesDir)).includes(file)) return undefined;
        if (Date.now() >= deadline) throw new Error(`listed but not found for ${RECORD_REOPEN_MS / 1000} s`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  }

  invalidNodes(): InvalidNodeRecord[] {
    return this.invalid;
  }

  withLock<T>(name: string, task: (lease: Lease) => Promise<T>): Promise<T> {
    return this.locks.withLock(name, task);
  }

  async assertRemovable(name: string, options: { force: boolean }): Promise<void> {
    if (options.force) return;
    const live: string[] = [];
    const stale: string[] = [];
    if (this.docker) {
      const here = (await this.docker.scan()).byVolume[name] ?? [];
      if (here.length > 0) {
        live.push(`${this.nodeId} (this node): ${here.map((c) => `container ${c.name} (${c.id.slice(0, 12)}, ${c.state})`).join(', ')}`);
      }
    }
    for (const node of await this.refresh()) {
      if (node.record.nodeId === this.nodeId) continue;
      const use = describeUse(node.record, name);
      if (!use) continue;
      if (node.stale) stale.push(`${node.record.nodeId} (last heartbeat ${seconds(node.heartbeatAgeMs)} ago): ${use}`);
      else live.push(`${node.record.nodeId}: ${use}`);
    }
    if (live.length > 0) {
      throw new StowageError(ErrorCodes.VOLUME_IN_USE,
        `volume ${name} is still used on ${live.join('; ')}. Remove those containers on their nodes (docker rm), ` +
        `then remove the volume again`, { volume: name });
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
    for (const node of await this.refresh()) {
      if (node.record.nodeId === this.nodeId) continue;
      const use = describeUse(node.record, name);
      if (use) uses.push(`${node.record.nodeId}${node.stale ? ` (last heartbeat ${seconds(node.heartbeatAgeMs)} ago)` : ''}: ${use}`);
    }
    return uses;
  }

  usage(name: string): Record<string, string> {
    const users: string[] = [];
    let mounts = 0;
    for (const node of this.view) {
      const use = node.record.nodeId === this.nodeId
        ? describeUse({ ...node.record, mounts: this.mounts(), containers: this.scan.byVolume }, name)
        : describeUse(node.record, name);
      if (use) users.push(`${node.record.nodeId}${node.stale ? ' (stale)' : ''}: ${use}`);
      mounts += Object.values(node.record.mounts[name] ?? {}).reduce((a, b) => a + b, 0);
    }
    return { usedBy: users.length > 0 ? users.join('; ') : 'no node', clusterMounts: String(mounts) };
  }

  nodes(): Promise<NodeView[]> {
    return this.refresh();
  }

  async forget(nodeId: string): Promise<void> {
    validateNodeId(nodeId);
    const node = (await this.refresh()).find((n) => n.record.nodeId === nodeId);
    if (!node) throw new StowageError(ErrorCodes.NODE_NOT_FOUND, `no node ${nodeId} is known`,
      { node: nodeId, remedies: [{ action: 'list-nodes' }] });
    if (nodeId === this.nodeId || !node.stale) {
      throw new StowageError(ErrorCodes.INVALID_REQUEST,
        `node ${nodeId} sent a heartbeat ${seconds(node.heartbeatAgeMs)} ago; stop its stowage daemon first, ` +
        `then forget it once it is stale (after ${seconds(this.settings.staleAfterMs)})`, { node: nodeId });
    }
    await this.fs.unlink(join(this.nodesDir, `${nodeId}.json`));
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
