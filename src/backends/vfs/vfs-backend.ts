import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import type {
  Backend, BackendCapabilities, CreateRequest, RemoveOutcome, RemoveRequest, VolumeRecord, VolumeUsage,
} from '../../core/backend.js';
import { BackgroundWork } from '../../core/background-work.js';
import { directoryUsage } from '../../core/disk-usage.js';
import { FLUSH_DELAY_MS, Flusher } from '../../core/flusher.js';
import { createFileExclusive, setTempOwner, writeFileAtomic } from '../../core/atomic-file.js';
import { ErrorCodes, StowageError, errnoCode, messageOf, volumeNotFound } from '../../core/errors.js';
import { isRemotePath, onLocalFilesystem, trustIfLocal } from '../../core/local-fs.js';
import { CheckedDirs, assertRealDir, describeLeftMounts, realDirOn, removeTreeOnDevice, setDirAttributes } from '../../core/safe-path.js';
import type { BackendContext } from '../context.js';
import { IntentRecovery } from './intent-recovery.js';
import { Journal, type IntentCalls } from './journal.js';
import { StorePresence } from './store-presence.js';
import { VolumeRegistry } from './registry.js';
import { VfsSnapshotRepository } from './snapshot-repository.js';
import {
  assertNoMountAt, checkNewSharedStore, dataPathOf, moveAside, moveBack, dataStateAt, internalDirs, nodeStateSchema, purgeable, readRecord, decideStoreSharing,
  storeLayout, storeMarkerSchema, sweepStoreTemps, type StoreLayout, type StoreMarker,
} from './store-layout.js';
import { replacedStoreMessage, storeVerdict, type StoreVerdict } from './store-at-start.js';
import { assertRootOutsideStore, holds, type VfsOptions } from './vfs-options.js';
import type { RepositorySnapshots } from '../../core/backup/repository-snapshots.js';
import { removalStamp } from '../../core/backup/retained-snapshots.js';

/** The verdict, unless it is a refusal: that is thrown as the daemon's error. */
function refuseOn(verdict: StoreVerdict): Exclude<StoreVerdict, { kind: 'refuse' }> {
  if (verdict.kind === 'refuse') throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, `${verdict.problem}; ${verdict.remedy}`);
  return verdict;
}

/**
 * A directory per volume under `vfs.path`, with the registry in `vfs.path/.stowage`. Volume
 * names cannot start with ".", so the metadata directory never collides with a volume. The
 * store may be written by other machines: every internal directory is checked to be a real
 * directory on the store's filesystem, and nothing read there is followed through a symlink.
 */
export class VfsBackend implements Backend {
  readonly name = 'vfs';
  /** Always present: cluster protection runs on every store, shared by declaration or not. */
  readonly clusterStateDir: string;
  private scope: 'local' | 'global';
  private readonly registry: VolumeRegistry;
  private readonly layout: StoreLayout;
  private readonly dirs: CheckedDirs;
  private readonly journal: Journal;
  private readonly background: BackgroundWork;
  private readonly flusher: Flusher;
  private readonly recovery: IntentRecovery;
  private readonly presence: StorePresence;
  private sharingEvidence: string[] = [];
  private readonly snapshotRepository: VfsSnapshotRepository;
  /** Snapshots are backups into a repository in the store (see repository-snapshots.ts). */
  readonly snapshots: RepositorySnapshots;

  /** `label`: the backend name recorded in snapshots (glusterfs runs a vfs store inside its pool). */
  constructor(private readonly ctx: BackendContext, private readonly options: VfsOptions, label = 'vfs') {
    // `auto` is settled by init; until then only a declared share is global.
    this.scope = options.shared === true ? 'global' : 'local';
    this.layout = storeLayout(options.path);
    this.dirs = new CheckedDirs(ctx.fs);
    this.presence = new StorePresence(ctx.fs, options.path, join(this.layout.meta, 'store.json'), this.dirs, () => this.storeCheckedAfresh());
    this.journal = new Journal(ctx.fs, this.layout.journal);
    this.background = new BackgroundWork(ctx.log);
    this.flusher = new Flusher(ctx.fs, ctx.log, FLUSH_DELAY_MS, (path) => isRemotePath(ctx.fs, path));
    this.registry = new VolumeRegistry(ctx.fs, this.layout.volumes, ctx.log, join(ctx.root, 'vfs-registry-cache.json'), this.flusher);
    this.recovery = new IntentRecovery({
      fs: ctx.fs, log: ctx.log, nodeId: ctx.nodeId, journal: this.journal, registry: this.registry,
      layout: this.layout, storePath: options.path, dirs: this.dirs, purge: (path) => this.purge(path),
    });
    this.clusterStateDir = this.layout.cluster;
    setTempOwner(ctx.nodeId);
    this.snapshotRepository = new VfsSnapshotRepository({
      fs: ctx.fs, log: ctx.log, storePath: options.path, metaDir: this.layout.meta, dirs: this.dirs, label,
      assertStorePresent: (volume) => this.assertStorePresent(volume), dataPath: (volume) => this.attach(volume), record: (volume) => this.get(volume),
    });
    this.snapshots = this.snapshotRepository.snapshots;
  }

  /** `.stowage/snapshots` in the store, checked (see snapshot-repository.ts). */
  snapshotRepositoryDir(volume?: string): Promise<string> {
    return this.snapshotRepository.dir(volume);
  }

  get capabilities(): BackendCapabilities {
    return { scope: this.scope, clusterStateDir: this.clusterStateDir, sizeLimit: 'recorded' };
  }

  private get markerPath(): string {
    return join(this.layout.meta, 'store.json');
  }

  /** Node-local memory of which store this node used at this path, to notice a vanished mount. */
  private get nodeStatePath(): string {
    return join(this.ctx.root, 'vfs-store.json');
  }

  async init(): Promise<void> {
    const { fs, log } = this.ctx;
    const { path, shared } = this.options;
    // Its mode is the state root's own business (state-root.ts): a daemon takes it before this.
    await fs.mkdir(this.ctx.root, { recursive: true, mode: 0o700 });
    await assertRootOutsideStore(this.ctx.root, path, log);
    trustIfLocal(fs, this.ctx.root);
    const exists = await fs.stat(path).then((s) => s.isDirectory(), () => false);
    const remembered = await readRecord(fs, nodeStateSchema, this.nodeStatePath, 'node state');
    const found = { path, shared, remembered, nodeStatePath: this.nodeStatePath };
    if (!exists) {
      refuseOn(storeVerdict({ ...found, store: 'no directory' }));
      await fs.mkdir(path, { recursive: true, mode: 0o700 }).catch((err: unknown) => {
        // A file at the path or on the way to it: said as the option it is, not as mkdir's errno.
        if (errnoCode(err) === 'EEXIST' || errnoCode(err) === 'ENOTDIR') {
          throw new StowageError(ErrorCodes.INVALID_OPTION, `vfs.path ${path} is not a directory, nor a path one can be made at (a file is there or on the way to it): give vfs.path a directory`);
        }
        throw err;
      });
    }
    const top = await fs.stat(path);
    this.dirs.setDevice(top.dev);
    this.registry.setAskServer(!trustIfLocal(fs, path) && onLocalFilesystem(path) === false);
    if ((top.mode & 0o077) !== 0) {
      log.warn(`vfs.path ${path} has mode ${(top.mode & 0o777).toString(8)}: other local users can list volume names ` +
        `and reach volume data; run "chmod 700 ${path}" (containers do not need more)`);
    }
    const metaPresent = await fs.lstat(this.layout.meta).then(() => true, (err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return false;
      throw err;
    });
    if (metaPresent) await this.dirs.ensure(this.layout.meta);
    let marker = await readRecord(fs, storeMarkerSchema, this.markerPath, 'store marker');
    const verdict = refuseOn(storeVerdict({ ...found, store: marker ? { storeId: marker.storeId } : 'no marker' }));
    if (verdict.kind === 'open' && verdict.replaces) log.warn(replacedStoreMessage(path, verdict.storeId, verdict.replaces));
    if (!marker) {
      if (verdict.kind === 'new' && verdict.checkShared) await checkNewSharedStore(fs, path, log);
      marker = await this.createStore();
    }
    await this.presence.started(marker.storeId);
    for (const dir of internalDirs(this.layout)) {
      const { mode } = await this.dirs.ensure(dir).then(() => fs.lstat(dir));
      if ((mode & 0o777) !== 0o700) await setDirAttributes(fs, dir, 0o700);
    }
    await this.registry.loadSnapshot(marker.storeId);
    if (remembered?.storeId !== marker.storeId || remembered.path !== path) {
      await writeFileAtomic(fs, this.nodeStatePath, JSON.stringify({ path, storeId: marker.storeId }));
    }
    await sweepStoreTemps(fs, log, this.ctx.nodeId,
      [this.ctx.root, this.layout.meta, this.layout.volumes, this.layout.journal, this.layout.members, this.layout.locks]);
    await this.recovery.recoverOwnIntents();
    await this.decideScope();
    // Finishes deletions a previous run started; only what stowage itself moved there is touched.
    for (const path of await purgeable(fs, log, this.layout.deleting, this.dirs.device)) this.purge(path);
  }

  private async createStore(): Promise<StoreMarker> {
    const marker: StoreMarker = { format: 1, storeId: randomBytes(8).toString('hex'), createdAt: new Date().toISOString(), createdBy: this.ctx.nodeId };
    await this.dirs.ensure(this.layout.meta);
    // Another node may create the store at the same moment; keep whichever marker landed first.
    await createFileExclusive(this.ctx.fs, this.markerPath, JSON.stringify(marker));
    const landed = await readRecord(this.ctx.fs, storeMarkerSchema, this.markerPath, 'store marker');
    if (!landed) throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, `${this.markerPath} vanished right after it was written`);
    return landed;
  }

  /** Decides `auto`, and holds `false` to its promise. */
  private async decideScope(): Promise<void> {
    const creators = (await this.registry.list()).map((r) => r.createdBy);
    const decision = await decideStoreSharing(this.ctx.fs, this.ctx.log, this.ctx.nodeId, this.options, [this.layout.members, this.layout.legacyNodes], creators);
    this.sharingEvidence = decision.evidence;
    this.scope = decision.scope;
  }

  async dispose(): Promise<void> {
    await this.background.settle();
    await this.flusher.drain();
    await this.registry.saveSnapshot();
    this.registry.close();
  }

  /** Waits for background deletions; data is already out of the namespace when remove returns. */
  settle(): Promise<void> {
    return this.background.settle();
  }

  /** See StorePresence: the store's directories checked again after a remount or a new marker. */
  private async storeCheckedAfresh(): Promise<void> {
    this.registry.setAskServer(!trustIfLocal(this.ctx.fs, this.options.path) && onLocalFilesystem(this.options.path) === false);
    for (const dir of internalDirs(this.layout)) await this.dirs.ensure(dir);
    this.ctx.log.info(`vfs store ${this.presence.storeId} at ${this.options.path} was mounted again or its marker replaced; its directories were checked afresh`);
  }

  private assertStorePresent(volume?: string): Promise<void> {
    return this.presence.assert(volume);
  }

  assertClusterStore(): Promise<void> {
    return this.presence.assert();
  }

  async create(request: CreateRequest): Promise<VolumeRecord> {
    await this.assertStorePresent(request.record.name);
    return this.journal.within((journal) => this.createWith(journal, request));
  }

  private async createWith(journal: IntentCalls, request: CreateRequest): Promise<VolumeRecord> {
    const { fs } = this.ctx;
    const { name, options } = request.record;
    await this.recovery.recover(name, journal);
    // Before looking at the data: a registered volume's own data is no conflict.
    if (await this.registry.get(name, { confirmMissing: false })) throw new StowageError(ErrorCodes.VOLUME_EXISTS, `volume ${name} already exists`, { volume: name });
    const dataDir = join(this.options.path, name);
    const found = await dataStateAt(this.ctx.fs, dataDir, name, this.dirs.device);
    // Data there is taken for no volume's only once a second look (refusing a swapped-in symlink) finds no entry either.
    if (found === 'data' && await this.registry.get(name)) throw new StowageError(ErrorCodes.VOLUME_EXISTS, `volume ${name} already exists`, { volume: name });
    // A state root an earlier version was given inside the store (see assertRootOutsideStore):
    // adopted, it would be deleted with the volume.
    if (found === 'data' && holds(dataDir, resolve(this.ctx.root))) {
      throw new StowageError(ErrorCodes.DATA_CONFLICT, `${dataDir} holds this node's state root (${this.ctx.root}): it is never a volume's data`, { volume: name });
    }
    if (found === 'data' && !request.adopt) {
      throw new StowageError(ErrorCodes.DATA_CONFLICT,
        `${dataDir} already holds data that belongs to no volume; move it away first, or adopt it as volume ${name}'s data`,
        { volume: name, remedies: [{ action: 'adopt', volume: name }] });
    }
    const record: VolumeRecord = found === 'data' ? { ...request.record, adopted: true } : request.record;
    let makesDir = found === 'absent';
    await journal.record({ format: 1, op: 'create', name, nodeId: this.ctx.nodeId, makesDir }).catch((err: unknown) => {
      throw errnoCode(err) === 'ENOENT' ? this.presence.notVisible(name) : err;
    });
    try {
      const owner = options.uid !== undefined || options.gid !== undefined;
      if (makesDir) {
        // With an owner to set, 0700 until owner and mode are final, so no one gets in through a half-made directory.
        await fs.mkdir(dataDir, { mode: owner ? 0o700 : options.mode ?? 0o755 }).catch((err: unknown) => {
          if (errnoCode(err) !== 'EEXIST') throw err;
          makesDir = false;
        });
        if (!makesDir) throw new StowageError(ErrorCodes.DATA_CONFLICT, `${dataDir} appeared while volume ${name} was being created`, { volume: name });
      }
      const dir = await realDirOn(fs, dataDir, this.dirs.device, name);
      const mode = options.mode ?? (makesDir ? 0o755 : dir.mode & 0o7777);
      // The umask may have taken bits from mkdir's mode; an adopted directory keeps its own unless told.
      if (owner || (dir.mode & 0o7777) !== mode) {
        await setDirAttributes(fs, dataDir, mode, owner ? { uid: options.uid ?? dir.uid, gid: options.gid ?? dir.gid } : undefined);
      }
      // The commit point: the volume becomes visible only now, complete.
      if (!(await this.registry.add({ format: 1, record, dataDir: name }))) {
        throw new StowageError(ErrorCodes.VOLUME_EXISTS, `volume ${name} already exists`, { volume: name });
      }
    } catch (err) {
      // Lease check: with the name's cluster lock lost, the directory may be another node's by now;
      // the intent record stays, and the next create or remove of the name settles it.
      request.lease?.assertHeld(`rolling back the create of volume ${name}`, { cause: err });
      await this.recovery.rollBackCreate(name, makesDir).then(() => journal.clear(name)).catch((undo: unknown) =>
        this.ctx.log.error(`could not roll back volume ${name} yet (the next start will): ${messageOf(undo)}`));
      throw err;
    }
    await journal.clear(name).catch((err: unknown) =>
      this.ctx.log.warn(`volume ${name} is created; its intent record stays until the next start: ${messageOf(err)}`));
    return record;
  }

  async get(name: string): Promise<VolumeRecord | undefined> {
    const entry = await this.registry.get(name);
    // "No such volume" from a store that is not there would make Docker forget the volume (and make a local one of the name).
    if (!entry) await this.assertStorePresent(name);
    return entry?.record;
  }

  async list(): Promise<VolumeRecord[]> {
    // Another store's volumes (one made again at vfs.path) are not this daemon's to list.
    await this.assertStorePresent();
    return this.registry.list();
  }

  remove(name: string, request: RemoveRequest): Promise<RemoveOutcome> {
    return this.journal.within((journal) => this.removeWith(journal, name, request));
  }

  private async removeWith(journal: IntentCalls, name: string, request: RemoveRequest): Promise<RemoveOutcome> {
    const { fs } = this.ctx;
    await this.recovery.recover(name, journal);
    const entry = await this.registry.get(name);
    await this.assertStorePresent(name);
    if (!entry) return {};
    const source = dataPathOf(this.options.path, entry);
    const stat = await fs.lstat(source).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw err;
    });
    if (stat) assertRealDir(stat, source, this.dirs.device, name);
    // A mount point cannot be moved: refused before the snapshots are settled, so the refusal changes nothing.
    if (stat) await assertNoMountAt(fs, source, name);
    const area = request.retain ? 'removed' : 'deleting';
    const stamp = removalStamp();
    const leaf = `${name}@${stamp}`;
    const target = join(this.layout.meta, area, leaf);
    for (const dir of [join(this.layout.meta, area), this.layout.volumes, this.layout.journal]) await this.dirs.recheck(dir, name);
    // After every check that can refuse the remove (a refused remove deletes nothing), before
    // the data moves (a failure here leaves the volume in place).
    const keptSnapshots = await this.snapshotRepository.settleWithVolume(name, request, stamp);
    const { createdAt, createdBy } = entry.record;
    await journal.record({ format: 1, op: 'remove', name, nodeId: this.ctx.nodeId, createdAt, createdBy, target: `${area}/${leaf}` });
    // Move first, unregister second; the intent record lets the next start finish either half.
    // Lease check; a lost lock leaves the intent record, which names this entry only and so changes nothing later.
    request.lease?.assertHeld(`moving the data of volume ${name} out of the store`);
    const moved = stat !== undefined && await moveAside(fs, source, join(this.layout.meta, area), leaf, name).catch(async (err: unknown) => {
      await journal.clear(name).catch(() => undefined);
      throw err;
    });
    try {
      await this.registry.delete(name);
    } catch (err) {
      // Never leave a visible volume without its data: put the data back if the entry stays.
      if (moved && await this.registry.get(name).then(Boolean, () => true)) {
        await moveBack(fs, join(this.layout.meta, area), leaf, source).then(() => journal.clear(name)).catch((undo: unknown) =>
          this.ctx.log.error(`could not put back the data of volume ${name} (the next start finishes the remove): ${messageOf(undo)}`));
      }
      throw err;
    }
    await journal.clear(name).catch((err: unknown) =>
      this.ctx.log.warn(`volume ${name} is removed; its intent record stays until the next start: ${messageOf(err)}`));
    const snapshotsKept = keptSnapshots && { snapshotsKept: keptSnapshots };
    if (!moved) return { ...snapshotsKept };
    if (request.retain) return { retainedAt: target, ...snapshotsKept };
    this.purge(target);
    return { ...snapshotsKept };
  }

  /** Deletes what stowage moved to `deleting/`, never crossing a symlink or into a mount point. */
  private purge(path: string): void {
    void this.background.start(`could not finish deleting ${path}`, async () => {
      await this.dirs.recheck(this.layout.deleting);
      const left = await removeTreeOnDevice(this.ctx.fs, path, this.dirs.device);
      if (left.length > 0) {
        this.ctx.log.error(`left ${describeLeftMounts(left)}; nothing mounted there was touched, and ${path} stays ` +
          'around it: unmount it and restart to finish deleting the removed volume\'s data');
      }
    });
  }

  async attach(name: string, known?: VolumeRecord): Promise<string> {
    await this.assertStorePresent(name);
    // The cached entry is the one `get` just checked only if it still holds that very record.
    const peeked = known && this.registry.peek(name);
    const entry = peeked && peeked.record === known ? peeked : await this.registry.get(name);
    if (!entry) throw volumeNotFound(name);
    const path = dataPathOf(this.options.path, entry);
    const stat = await this.ctx.fs.lstat(path).catch(() => undefined);
    if (!stat || (!stat.isDirectory() && !stat.isSymbolicLink())) {
      throw new StowageError(ErrorCodes.VOLUME_DATA_MISSING,
        `the data directory ${path} of volume ${name} is missing or not a directory; it was changed outside stowage. ` +
        `Restore it, or remove the volume${stat ? ' (move what is there away by hand first: stowage does not touch it)' : ''}`, { volume: name });
    }
    assertRealDir(stat, path, this.dirs.device, name);
    // No data goes into a volume whose record could still vanish in a power loss.
    await this.registry.durable(name);
    return path;
  }

  async detach(): Promise<void> {
    // A directory needs no teardown.
  }

  async volumeStatus(name: string): Promise<Record<string, string>> {
    // Called right after get() for the same name, so the cache is fresh enough.
    const entry = this.registry.peek(name) ?? await this.registry.get(name);
    return entry ? { path: dataPathOf(this.options.path, entry), ...(entry.record.adopted ? { adopted: 'true' } : {}) } : {};
  }

  /** Walks the volume's files (see VolumeUsage): a vfs directory has no cheaper count. */
  async usage(name: string): Promise<VolumeUsage | undefined> {
    const entry = this.registry.peek(name) ?? await this.registry.get(name);
    return entry ? directoryUsage(dataPathOf(this.options.path, entry), entry.record.options.size) : undefined;
  }

  async describe(): Promise<Record<string, string>> {
    return {
      'vfs.path': this.options.path,
      'vfs.shared': String(this.options.shared),
      scope: this.capabilities.scope,
      sharedEvidence: this.sharingEvidence.join('; ') || 'none',
      storeId: this.presence.storeId,
      ...await this.snapshotRepository.keptSummary(),
    };
  }
}
