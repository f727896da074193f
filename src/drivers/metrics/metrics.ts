import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Backend, StorageHealth, VolumeUsage } from '../../core/backend.js';
import { messageOf } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import type { VolumeManager } from '../../core/volume-manager.js';

export interface MetricsSettings {
  /** A volume's usage is measured again once older than this. */
  usageTtlMs: number;
  /** At most this many volumes are measured at once. */
  usageConcurrency: number;
  /** A scrape waits at most this long for usage being measured; the rest shows at the next scrape. */
  scrapeWaitMs: number;
}

/**
 * A scrape of 10 000 volumes must not walk them all each time: a vfs volume's usage is a walk
 * of its files. Each volume's usage is cached for 60 s, measured 4 at a time in one refresh
 * shared by concurrent scrapes, and a scrape waits at most 5 s for it before answering with what
 * it has (the refresh goes on, and the next scrape shows the rest).
 */
export const DEFAULT_METRICS_SETTINGS: MetricsSettings = { usageTtlMs: 60_000, usageConcurrency: 4, scrapeWaitMs: 5_000 };

/** Operation latency buckets: a Get takes under a millisecond, a gluster create seconds, a backup minutes. */
const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800];

interface CachedUsage {
  usage?: VolumeUsage;
  at: number;
}

/** What one scrape reads once and every gauge shares. */
interface ScrapeState {
  volumes: number;
  nodes: Awaited<ReturnType<VolumeManager['nodes']>>;
  health?: StorageHealth;
}

/**
 * The daemon's Prometheus metrics. Counters and histograms are fed by the operation
 * instrumentation (instrument.ts); gauges are computed when scraped.
 */
export class StowageMetrics {
  readonly registry = new Registry();
  private readonly duration: Histogram<'operation' | 'backend'>;
  private readonly errors: Counter<'operation' | 'code'>;
  private readonly backups: Counter<'result'>;
  private readonly backupBytes: Counter;
  private readonly backupStoredBytes: Counter;
  private readonly restores: Counter<'result'>;
  private readonly restoreBytes: Counter;
  private readonly usage = new Map<string, CachedUsage>();
  private refreshing?: Promise<void>;
  private scrape?: Promise<ScrapeState>;

  constructor(
    private readonly manager: VolumeManager,
    private readonly backend: Backend,
    private readonly log: Logger,
    private readonly settings: MetricsSettings = DEFAULT_METRICS_SETTINGS,
  ) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.duration = new Histogram({
      name: 'stowage_operation_duration_seconds', help: 'Time taken by volume operations, failed ones included',
      labelNames: ['operation', 'backend'], buckets: DURATION_BUCKETS, registers,
    });
    this.errors = new Counter({
      name: 'stowage_operation_errors_total', help: 'Failed volume operations, by error code',
      labelNames: ['operation', 'code'], registers,
    });
    this.backups = new Counter({ name: 'stowage_backups_total', help: 'Backups made by this daemon, by result', labelNames: ['result'], registers });
    this.backupBytes = new Counter({ name: 'stowage_backup_bytes_total', help: 'Bytes of volume data covered by finished backups', registers });
    this.backupStoredBytes = new Counter({
      name: 'stowage_backup_stored_bytes_total', help: 'Bytes finished backups added to their repositories (new packs, after compression)', registers,
    });
    this.restores = new Counter({ name: 'stowage_restores_total', help: 'Restores run by this daemon, by result', labelNames: ['result'], registers });
    this.restoreBytes = new Counter({ name: 'stowage_restore_bytes_total', help: 'Bytes written by restores', registers });
    for (const result of ['success', 'failure']) {
      this.backups.inc({ result }, 0);
      this.restores.inc({ result }, 0);
    }
    this.defineGauges(registers);
  }

  /** One operation's end; `code` for a failure. */
  observe(operation: string, seconds: number, code?: string): void {
    this.duration.observe({ operation, backend: this.backend.name }, seconds);
    if (code !== undefined) this.errors.inc({ operation, code });
  }

  backupDone(ok: boolean, bytes = 0, storedBytes = 0): void {
    this.backups.inc({ result: ok ? 'success' : 'failure' });
    if (ok) {
      this.backupBytes.inc(bytes);
      this.backupStoredBytes.inc(storedBytes);
    }
  }

  restoreDone(ok: boolean, bytes = 0): void {
    this.restores.inc({ result: ok ? 'success' : 'failure' });
    if (bytes > 0) this.restoreBytes.inc(bytes);
  }

  /** The exposition text, in Prometheus' format. */
  async text(): Promise<string> {
    this.scrape = undefined;
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  private defineGauges(registers: Registry[]): void {
    // Every gauge reads the same state, fetched once per scrape (registry.metrics() collects them one after another).
    const state = () => this.scrapeState();
    const gauge = <T extends string>(name: string, help: string, labelNames: T[], collect: (g: Gauge<T>, s: ScrapeState) => Promise<void> | void) =>
      new Gauge<T>({
        name, help, labelNames, registers,
        async collect() {
          this.reset();
          await collect(this, await state());
        },
      });
    gauge('stowage_volumes', 'Volumes the backend knows (all nodes\' for shared storage)', [], (g, s) => { g.set(s.volumes); });
    gauge('stowage_mounts', 'Mounts held on this node (containers using volumes, counted per mount)', [], (g) => {
      g.set(this.manager.mountRecords().reduce((n, r) => n + r.count, 0));
    });
    gauge('stowage_mounted_volumes', 'Volumes mounted on this node', [], (g) => {
      g.set(new Set(this.manager.mountRecords().map((r) => r.volume)).size);
    });
    gauge('stowage_cluster_nodes', 'Nodes sharing this storage, by state (alive: heartbeat recent; stale: silent past --stale-after)', ['state'],
      (g, s) => {
        g.set({ state: 'alive' }, s.nodes.filter((n) => !n.stale).length);
        g.set({ state: 'stale' }, s.nodes.filter((n) => n.stale).length);
      });
    gauge('stowage_cluster_node_clock_offset_seconds', 'Each node\'s clock minus the shared storage\'s, as the node last published it', ['node'],
      (g, s) => { for (const n of s.nodes) g.set({ node: n.record.nodeId }, n.record.clockOffsetMs / 1000); });
    gauge('stowage_cluster_node_heartbeat_age_seconds', 'Time since each node last published its record', ['node'],
      (g, s) => { for (const n of s.nodes) g.set({ node: n.record.nodeId }, n.heartbeatAgeMs / 1000); });
    gauge('stowage_gluster_mount_up', 'Whether a GlusterFS mount this node depends on is live (1) or not (0)', ['volume'],
      (g, s) => { for (const m of s.health?.mounts ?? []) g.set({ volume: m.volume }, m.live ? 1 : 0); });
    const pool = (name: string, help: string, pick: (p: NonNullable<StorageHealth['thinPool']>) => number) =>
      gauge(name, help, ['pool'], (g, s) => { if (s.health?.thinPool) g.set({ pool: s.health.thinPool.pool }, pick(s.health.thinPool)); });
    pool('stowage_thin_pool_data_used_bytes', 'Thin pool data space in use', (p) => p.dataUsedBytes);
    pool('stowage_thin_pool_data_size_bytes', 'Thin pool data space in all', (p) => p.dataSizeBytes);
    pool('stowage_thin_pool_metadata_used_bytes', 'Thin pool metadata space in use', (p) => p.metadataUsedBytes);
    pool('stowage_thin_pool_metadata_size_bytes', 'Thin pool metadata space in all', (p) => p.metadataSizeBytes);
    pool('stowage_thin_pool_healthy', 'Whether the thin pool accepts writes (1) or is failed, read-only, out of space or needs a check (0)',
      (p) => (p.healthy ? 1 : 0));
    const perVolume = (name: string, help: string, pick: (u: VolumeUsage) => number) =>
      gauge(name, help, ['volume'], (g) => {
        for (const [volume, cached] of this.usage) if (cached.usage) g.set({ volume }, pick(cached.usage));
      });
    perVolume('stowage_volume_capacity_bytes', 'What the volume may hold: its size, else its filesystem\'s', (u) => u.capacityBytes);
    perVolume('stowage_volume_used_bytes', 'What the volume\'s data takes on the storage', (u) => u.usedBytes);
    perVolume('stowage_volume_available_bytes', 'What the volume may still write', (u) => u.availableBytes);
  }

  /** The state of the scrape in progress, read by its first gauge (text() starts each scrape afresh). */
  private scrapeState(): Promise<ScrapeState> {
    this.scrape ??= this.readState();
    return this.scrape;
  }

  private async readState(): Promise<ScrapeState> {
    const records = await this.backend.list().catch((err: unknown) => {
      this.log.warn(`metrics: listing volumes failed: ${messageOf(err)}`);
      return undefined;
    });
    const [nodes, health] = await Promise.all([
      this.manager.nodes().catch(() => []),
      this.backend.storageHealth?.().catch((err: unknown) => {
        this.log.warn(`metrics: storage health unavailable: ${messageOf(err)}`);
        return undefined;
      }),
    ]);
    if (records && this.backend.usage) await this.refreshUsage(records.map((r) => r.name));
    return { volumes: records?.length ?? 0, nodes, health };
  }

  /**
   * Measures stale volumes (see DEFAULT_METRICS_SETTINGS), waiting for it at most scrapeWaitMs.
   * A refresh already running (started by an earlier scrape) is waited for, then the volumes it
   * did not cover (made since) are measured in a new one.
   */
  private async refreshUsage(names: string[]): Promise<void> {
    const known = new Set(names);
    for (const name of this.usage.keys()) if (!known.has(name)) this.usage.delete(name);
    const deadline = Date.now() + this.settings.scrapeWaitMs;
    for (;;) {
      if (!this.refreshing) {
        const now = Date.now();
        const stale = names.filter((n) => now - (this.usage.get(n)?.at ?? -Infinity) >= this.settings.usageTtlMs);
        if (stale.length === 0) return;
        this.refreshing = this.measure(stale).finally(() => { this.refreshing = undefined; });
      }
      const left = deadline - Date.now();
      if (left <= 0) return;
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        this.refreshing.then(() => false),
        new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(true), left); }),
      ]);
      clearTimeout(timer);
      if (timedOut) return;
    }
  }

  private async measure(names: string[]): Promise<void> {
    const usageOf = this.backend.usage!.bind(this.backend);
    let next = 0;
    const worker = async () => {
      while (next < names.length) {
        const name = names[next++]!;
        const usage = await usageOf(name).catch((err: unknown) => {
          this.log.debug?.(`metrics: usage of ${name} unavailable: ${messageOf(err)}`, { volume: name });
          return undefined;
        });
        this.usage.set(name, { usage, at: Date.now() });
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.settings.usageConcurrency, names.length) }, worker));
  }
}
