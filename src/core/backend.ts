import type { BlockSupport } from './backup/block-support.js';
import type { Lease } from './cluster/lease.js';
import type { VolumeOptions } from './options.js';
import type { Repository } from './backup/repository.js';
import type { RetainedSnapshots } from './backup/retained-snapshots.js';

export type { Lease } from './cluster/lease.js';

/**
 * Who sees the volumes, stated once with where the nodes sharing the storage coordinate: a
 * `global` backend cannot be declared without a `clusterStateDir`.
 */
export type BackendScope =
  | {
    /** Volumes of this node only, as far as Docker is told. */
    scope: 'local';
    /**
     * Present when the storage may be shared all the same (vfs on a path another node can mount):
     * the core then runs cluster protection as for a `global` backend.
     */
    clusterStateDir?: string;
  }
  | {
    /** Every node pointing at the same storage sees the same volumes. */
    scope: 'global';
    /**
     * A directory on the storage, seen by every node that uses the same storage, for membership,
     * references and locks; the core runs cluster protection whenever it is present.
     */
    clusterStateDir: string;
  };

/**
 * What a backend can do; the core and the shells branch on these only. Snapshots are not a flag:
 * a backend that can take them has the `snapshots` member.
 */
export type BackendCapabilities = BackendScope & {
  /** How a `size` option is treated: only recorded, or enforced by the storage. */
  sizeLimit: 'recorded' | 'enforced';
  /** Create options beyond size/uid/gid/mode/adopt that this backend accepts (e.g. `replica`). */
  createOptions?: readonly string[];
};

/** A point-in-time copy of a volume, where the backend can make one. */
export interface SnapshotRecord {
  name: string;
  volume: string;
  /** RFC 3339 time of creation. */
  createdAt: string;
  /** Backend facts (e.g. a thin device id). */
  details?: Record<string, string>;
  /**
   * In the answer to the create only: what the snapshot could not take as the volume has it (a
   * socket skipped, an attribute that could not be read), as a backup says it; absent when none.
   */
  warnings?: string[];
}

/** How a snapshot or backup that reads a volume's files reads them. */
export interface SnapshotReadOptions {
  /**
   * false: extended attributes (ACLs, capabilities, user.*) are left out. Reading them runs
   * `getfattr` over every entry, which on a GlusterFS mount costs seconds per 10 000 entries.
   */
  xattrs?: boolean;
}

/**
 * Snapshot operations, the `snapshots` member of a backend that can take them. The core
 * serialises them with the other operations of the same volume; names arrive validated.
 */
export interface SnapshotSupport {
  /**
   * Throws E_VOLUME_NOT_FOUND for an unknown volume, E_SNAPSHOT_EXISTS for a taken snapshot name.
   * `options` matter to snapshots that read the volume's files (those with `readLive`); the core
   * refuses them for the others.
   */
  createSnapshot(volume: string, snapshot: string, options?: SnapshotReadOptions): Promise<SnapshotRecord>;
  /** Snapshots of one volume, oldest first; empty for a volume without snapshots. */
  listSnapshots(volume: string): Promise<SnapshotRecord[]>;
  /** Throws E_SNAPSHOT_NOT_FOUND for an unknown snapshot. */
  deleteSnapshot(volume: string, snapshot: string): Promise<void>;
  /**
   * Gives read access to a snapshot's files, for backups; the caller calls `release` when done
   * (once; more calls do nothing). Throws E_SNAPSHOT_NOT_FOUND for an unknown snapshot. Every
   * backend with snapshots has it: a snapshot that cannot be read cannot be backed up.
   */
  openSnapshot(volume: string, snapshot: string): Promise<SnapshotSource>;
  /**
   * Optional, for backends whose snapshots are file-by-file reads of the live data (vfs,
   * glusterfs): runs `work` on the volume's live data directory. A backup that takes no snapshot
   * of its own reads it straight into its destination: a snapshot would hold the same, and the
   * destination's previous backup then serves as the files cache (a snapshot taken and deleted
   * for every backup would leave none, and every file would be read again).
   */
  readLive?<T>(volume: string, work: (path: string) => Promise<T>): Promise<T>;
}

/**
 * How a snapshot's files are read. A backend whose snapshots are block-level (devicemapper's
 * thin snapshots) mounts one read-only and gives its directory (`tree`); a backend whose
 * snapshots are backups into a repository on its own storage (vfs, glusterfs) names that backup
 * (`backup`), which a backup to another repository copies chunk by chunk.
 */
export type SnapshotSource =
  | { kind: 'tree'; path: string; release(): Promise<void> }
  | { kind: 'backup'; repository: Repository; volume: string; backupId: string; release(): Promise<void> };

/** How much space a volume has and uses, in bytes. */
export interface VolumeUsage {
  /** What the volume may hold: its enforced or recorded size, else its filesystem's size. */
  capacityBytes: number;
  /** What its data takes on the storage (allocated blocks, or mapped thin blocks). */
  usedBytes: number;
  /** What it may still write: the lesser of the space left under its size and its filesystem's free space. */
  availableBytes: number;
}

/** The storage's own state, for metrics and `stowage doctor`. Each part is present where the backend has one. */
export interface StorageHealth {
  /** A devicemapper thin pool's space. */
  thinPool?: {
    pool: string;
    dataUsedBytes: number;
    dataSizeBytes: number;
    metadataUsedBytes: number;
    metadataSizeBytes: number;
    /** False once the pool is failed, read-only, out of data space or flagged for a check. */
    healthy: boolean;
  };
  /** GlusterFS mounts this node depends on (the pool's, in subdir mode), live or not. */
  mounts?: { target: string; volume: string; live: boolean }[];
}

/** A volume as the backend's registry knows it. Records are immutable once created. */
export interface VolumeRecord {
  name: string;
  /** Defining options as given at create time (never `adopt`). */
  options: Omit<VolumeOptions, 'adopt'>;
  /** RFC 3339 time of creation. */
  createdAt: string;
  /** Node id of the daemon that created it. */
  createdBy: string;
  /** True when the volume took over data that already existed. */
  adopted?: boolean;
}

/** Built by `createRequest` (core/create-request.ts), so every backend stores the same record. */
export interface CreateRequest {
  /**
   * The record to register: name, defining options (never `adopt`), creation time and node.
   * A backend stores it as given, adding only `adopted: true` when it took over existing data.
   */
  record: VolumeRecord;
  /** Take over data already where the volume's data would go, instead of refusing. */
  adopt: boolean;
  /**
   * The cluster lock's lease, when the core holds the name's cluster lock. Call
   * `lease.assertHeld(step)` right before each destructive step (deleting, moving aside,
   * stopping, and the undo of a failed create): once it is lost another node may have taken the
   * name, and what is there may be that node's. A lost lease fails the operation and leaves
   * everything as it is. Absent when no cluster lock is held (a backend used on its own).
   */
  lease?: Lease;
}

export interface RemoveRequest {
  /** Move the data out of the volume namespace instead of deleting it (the `retain` policy). */
  retain: boolean;
  /**
   * The cluster lock's lease, when the core holds the name's cluster lock. Call
   * `lease.assertHeld(step)` right before each destructive step (deleting, moving aside,
   * stopping, and the undo of a failed create): once it is lost another node may have taken the
   * name, and what is there may be that node's. A lost lease fails the operation and leaves
   * everything as it is. Absent when no cluster lock is held (a backend used on its own).
   */
  lease?: Lease;
}

export interface RemoveOutcome {
  /** Where retained data now lives, when it was retained. */
  retainedAt?: string;
  /**
   * When the data was retained and the backend keeps snapshots as backups (vfs, glusterfs):
   * where the volume's snapshots are kept; devicemapper keeps them as retained data instead.
   * Also on a delete that found snapshots of an earlier volume of the name (`ofEarlierVolume`).
   */
  snapshotsKept?: RetainedSnapshots;
}

/**
 * The storage a VolumeManager drives. A backend makes, removes, attaches and detaches storage;
 * names arrive validated, and calls for one volume never overlap (the core serialises them).
 * Every sentence below is checked by the conformance suites in src/testing/ (`stowage/testing`),
 * but two that need faults a generic suite cannot cause: the undo of a half-made create and
 * `ready`, checked by the backends' own tests.
 */
export interface Backend {
  /** Short identifier shown to users, e.g. "vfs". */
  readonly name: string;
  readonly capabilities: BackendCapabilities;

  /** Connects to or prepares the storage. Fails with E_BACKEND_UNAVAILABLE, naming what is missing, if it is not there. */
  init(): Promise<void>;

  /** Releases resources and waits for background work (such as purges) to finish. */
  dispose(): Promise<void>;

  /**
   * Optional, for backends that work in the background (purges, sweeps): resolves once the work
   * started so far has finished, so a caller (a test) can look at what a remove left behind.
   */
  settle?(): Promise<void>;

  /**
   * Optional: confirms, healing what it can, that the storage a create or remove of `volume`
   * needs (including `capabilities.clusterStateDir`) is reachable. The core calls it before taking the
   * cluster lock, so an unreachable store is reported as E_BACKEND_UNAVAILABLE saying what to
   * do rather than as a failed lock file.
   */
  ready?(volume: string): Promise<void>;

  /**
   * Optional, for backends that can tell: throws unless the storage under
   * `capabilities.clusterStateDir` is still the store this backend started on (not unmounted,
   * not deleted and made again by another node). The cluster's heartbeat asks before each write
   * there, so a daemon whose store was replaced under it publishes nothing into the new one.
   */
  assertClusterStore?(): Promise<void>;

  /**
   * Creates the volume and registers it. Throws E_VOLUME_EXISTS when the name is registered,
   * before changing anything: the core does not look the name up first (it answers the same
   * create again from that error), so this check is what keeps an existing volume whole.
   * Refuses with E_DATA_CONFLICT when non-empty data already sits where the volume's data
   * would go, unless `request.adopt` is set. A new volume's data area starts empty. A create
   * that fails half-way undoes what it made, but only while `request.lease` holds.
   */
  create(request: CreateRequest): Promise<VolumeRecord>;

  /** Returns the record, or undefined for an unknown name. Cheap and side-effect free. */
  get(name: string): Promise<VolumeRecord | undefined>;

  /** All registered volumes, including those created by other nodes for a `global` backend. */
  list(): Promise<VolumeRecord[]>;

  /**
   * Unregisters the volume. With `retain` the data moves out of the volume namespace so a
   * new volume of the same name starts empty; otherwise it is deleted. Removing an unknown
   * name is a no-op that returns `{}`. With a lost `request.lease` nothing is moved or deleted.
   */
  remove(name: string, request: RemoveRequest): Promise<RemoveOutcome>;

  /**
   * Makes the volume's data available on this node and returns its path. Idempotent: calling
   * it on an attached volume checks and, where possible, repairs the attachment. Throws
   * E_VOLUME_NOT_FOUND for an unknown name and never returns a path that is not the volume's
   * own storage. `known` is the record `get` answered for this name just before, under the
   * name's lock: a backend may take it as read instead of reading the record again.
   */
  attach(name: string, known?: VolumeRecord): Promise<string>;

  /** Releases what attach set up. Idempotent; detaching an unattached volume is a no-op. */
  detach(name: string): Promise<void>;

  /** Extra facts for `Status` (usage, limits, ...). Must not throw for a registered volume. */
  volumeStatus(name: string): Promise<Record<string, string>>;

  /** Facts about the backend for `stowage info`. */
  describe(): Promise<Record<string, string>>;

  /**
   * Optional: the volume's space, or undefined for an unknown name. May read the whole volume
   * (vfs without a size walks its files), so callers cache it and bound how many run at once.
   */
  usage?(name: string): Promise<VolumeUsage | undefined>;

  /** Optional: the state of the storage under all volumes (thin pool, gluster mounts). */
  storageHealth?(): Promise<StorageHealth>;

  /** Present exactly when the backend can snapshot volumes. */
  readonly snapshots?: SnapshotSupport;
  /** Present when snapshots are block devices that block-level backups can read (devicemapper). */
  readonly blocks?: BlockSupport;
}
