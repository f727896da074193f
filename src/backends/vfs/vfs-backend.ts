import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type {
  Backend, BackendCapabilities, CreateRequest, RemoveOutcome, RemoveRequest, VolumeRecord,
} from '../../core/backend.js';
import { createFileExclusive, readJsonFile, writeFileAtomic } from '../../core/atomic-file.js';
import { ErrorCodes, StowageError, errnoCode } from '../../core/errors.js';
import type { BackendContext } from '../context.js';
import { VolumeRegistry, type RegistryEntry } from './registry.js';
import type { VfsOptions } from './vfs-options.js';

const META_DIR = '.stowage';

interface StoreMarker {
  format: 1;
  storeId: string;
  createdAt: string;
  createdBy: string;
}

function stamp(): string {
  return new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z') + '-' + randomBytes(3).toString('hex');
}

/**
 * A directory per volume under `vfs.path`, with the registry in `vfs.path/.stowage`. Volume
 * names cannot start with ".", so the metadata directory never collides with a volume.
 */
export class VfsBackend implements Backend {
  readonly name = 'vfs';
  readonly capabilities: BackendCapabilities;
  private readonly registry: VolumeRegistry;
  private readonly meta: string;
  private readonly purges = new Set<Promise<void>>();
  private storeId = '';
  readonly clusterStateDir?: string;

  constructor(private readonly ctx: BackendContext, private readonly options: VfsOptions) {
    this.capabilities = { scope: options.shared ? 'global' : 'local', sizeLimit: 'recorded', snapshots: false };
    this.meta = join(options.path, META_DIR);
    this.registry = new VolumeRegistry(ctx.fs, join(this.meta, 'volumes'), ctx.log, join(ctx.root, 'vfs-registry-cache.json'));
    if (options.shared) this.clusterStateDir = join(this.meta, 'cluster');
  }

  private get markerPath(): string {
    return join(this.meta, 'store.json');
  }

  /** Node-local memory of which store this node used at this path, to notice a vanished mount. */
  private get nodeStatePath(): string {
    return join(this.ctx.root, 'vfs-store.json');
  }

  async init(): Promise<void> {
    const { fs } = this.ctx;
    const { path, shared } = this.options;
    await fs.mkdir(this.ctx.root, { recursive: true });
    const exists = await fs.stat(path).then((s) => s.isDirectory(), () => false);
    if (!exists) {
      if (shared) {
        throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE,
          `vfs.path ${path} does not exist; mount the shared filesystem there before starting stowage`);
      }
      await fs.mkdir(path, { recursive: true, mode: 0o755 });
    }
    const remembered = (await readJsonFile(fs, this.nodeStatePath)) as { path?: string; storeId?: string } | undefined;
    let marker = (await readJsonFile(fs, this.markerPath)) as StoreMarker | undefined;
    if (!marker) {
      if (remembered?.path === path && remembered.storeId) {
        throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE,
          `vfs.path ${path} no longer holds stowage store ${remembered.storeId} that this node used before; ` +
          `is the shared filesystem mounted? If the store is really gone, remove ${this.nodeStatePath} to start a new one`);
      }
      marker = await this.createStore();
    }
    this.storeId = marker.storeId;
    await this.registry.loadSnapshot(marker.storeId);
    await fs.mkdir(join(this.meta, 'volumes'), { recursive: true });
    await fs.mkdir(join(this.meta, 'removed'), { recursive: true });
    await fs.mkdir(join(this.meta, 'deleting'), { recursive: true });
    if (remembered?.storeId !== marker.storeId || remembered.path !== path) {
      await writeFileAtomic(fs, this.nodeStatePath, JSON.stringify({ path, storeId: marker.storeId }));
    }
    // Finish deletions a previous run started; only what stowage itself moved there is touched.
    for (const leftover of await fs.readdir(join(this.meta, 'deleting'))) this.purge(join(this.meta, 'deleting', leftover));
  }

  private async createStore(): Promise<StoreMarker> {
    const marker: StoreMarker = {
      format: 1,
      storeId: randomBytes(8).toString('hex'),
      createdAt: new Date().toISOString(),
      createdBy: this.ctx.nodeId,
    };
    await this.ctx.fs.mkdir(this.meta, { recursive: true });
    // Another node may create the store at the same moment; keep whichever marker landed first.
    await createFileExclusive(this.ctx.fs, this.markerPath, JSON.stringify(marker));
    return (await readJsonFile(this.ctx.fs, this.markerPath)) as StoreMarker;
  }

  async dispose(): Promise<void> {
    await Promise.allSettled([...this.purges]);
    await this.registry.saveSnapshot();
  }

  /** Waits for background deletions; data is already out of the namespace when remove returns. */
  async settle(): Promise<void> {
    while (this.purges.size > 0) await Promise.allSettled([...this.purges]);
  }

  /** Refuses to work on a store whose marker vanished: the shared mount is probably gone. */
  private async assertStorePresent(volume?: string): Promise<void> {
    const present = await this.ctx.fs.stat(this.markerPath).then(() => true, () => false);
    if (!present) {
      throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE,
        `stowage store ${this.storeId} is not visible at ${this.options.path}; is the filesystem still mounted?`, { volume });
    }
  }

  private dataPath(entry: RegistryEntry): string {
    // Registry entries come from shared storage; never follow one outside the store.
    if (entry.dataDir.length === 0 || entry.dataDir.includes('/') || entry.dataDir.startsWith('.')) {
      throw new StowageError(ErrorCodes.STATE_CORRUPT,
        `registry entry of volume ${entry.record.name} points at ${JSON.stringify(entry.dataDir)}, outside the store`,
        { volume: entry.record.name });
    }
    return join(this.options.path, entry.dataDir);
  }

  async create(request: CreateRequest): Promise<VolumeRecord> {
    const { fs } = this.ctx;
    const { name, options } = request;
    const dataDir = join(this.options.path, name);
    const adopted = await this.holdsData(dataDir, name);
    if (adopted && !options.adopt) {
      throw new StowageError(ErrorCodes.DATA_CONFLICT,
        `${dataDir} already holds data that belongs to no volume; to make it volume ${name}'s data create with ` +
        `-o adopt=true, otherwise move it away first`, { volume: name });
    }
    const { adopt: _adopt, ...defining } = options;
    const record: VolumeRecord = {
      name, options: defining, createdAt: request.createdAt, createdBy: request.createdBy,
      ...(adopted ? { adopted: true } : {}),
    };
    // Registering first also proves the store is there: without it, .stowage/volumes is missing
    // and nothing gets created in what may be an empty mount point.
    const registered = await this.registry.add({ format: 1, record, dataDir: name }).catch((err: unknown) => {
      if (errnoCode(err) !== 'ENOENT') throw err;
      throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE,
        `stowage store ${this.storeId} is not visible at ${this.options.path}; is the filesystem still mounted?`, { volume: name });
    });
    if (!registered) throw new StowageError(ErrorCodes.VOLUME_EXISTS, `volume ${name} already exists`, { volume: name });
    try {
      const made = await fs.mkdir(dataDir, { mode: options.mode ?? 0o755 }).then(() => true, (err: unknown) => {
        if (errnoCode(err) !== 'EEXIST') throw err;
        return false;
      });
      const stat = made && options.uid === undefined && options.gid === undefined ? undefined : await fs.lstat(dataDir);
      if (stat && !stat.isDirectory()) {
        throw new StowageError(ErrorCodes.DATA_CONFLICT, `${dataDir} exists and is not a directory`, { volume: name });
      }
      // mkdir's mode is filtered by the umask; the user asked for these exact bits.
      if (options.mode !== undefined) await fs.chmod(dataDir, options.mode);
      if (stat && (options.uid !== undefined || options.gid !== undefined)) {
        await fs.chown(dataDir, options.uid ?? stat.uid, options.gid ?? stat.gid);
      }
    } catch (err) {
      await this.registry.delete(name);
      throw err;
    }
    return record;
  }

  /** True when `dir` exists with content; a non-directory there is a conflict in itself. */
  private async holdsData(dir: string, name: string): Promise<boolean> {
    const stat = await this.ctx.fs.lstat(dir).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw err;
    });
    if (!stat) return false;
    if (!stat.isDirectory()) {
      throw new StowageError(ErrorCodes.DATA_CONFLICT, `${dir} exists and is not a directory; move it away first`, { volume: name });
    }
    return (await this.ctx.fs.readdir(dir)).length > 0;
  }

  async get(name: string): Promise<VolumeRecord | undefined> {
    return (await this.registry.get(name))?.record;
  }

  list(): Promise<VolumeRecord[]> {
    return this.registry.list();
  }

  async remove(name: string, request: RemoveRequest): Promise<RemoveOutcome> {
    const { fs } = this.ctx;
    const entry = await this.registry.get(name);
    if (!entry) return {};
    await this.assertStorePresent(name);
    const source = this.dataPath(entry);
    const target = join(this.meta, request.retainData ? 'removed' : 'deleting', `${name}@${stamp()}`);
    // Move first, unregister second: a crash in between leaves a volume with missing data, never
    // a new volume that silently shows the old data.
    let moved = true;
    await fs.rename(source, target).catch((err: unknown) => {
      if (errnoCode(err) !== 'ENOENT') throw err;
      moved = false;
    });
    await this.registry.delete(name);
    if (!moved) return {};
    if (request.retainData) return { retainedAt: target };
    this.purge(target);
    return {};
  }

  private purge(path: string): void {
    const task = this.ctx.fs.rm(path, { recursive: true, force: true })
      .catch((err: unknown) => this.ctx.log.error(`could not finish deleting ${path}: ${(err as Error).message}`))
      .finally(() => this.purges.delete(task));
    this.purges.add(task);
  }

  async attach(name: string): Promise<string> {
    await this.assertStorePresent(name);
    const entry = await this.registry.get(name);
    if (!entry) throw new StowageError(ErrorCodes.VOLUME_NOT_FOUND, `volume ${name} does not exist`, { volume: name });
    const path = this.dataPath(entry);
    const stat = await this.ctx.fs.lstat(path).catch(() => undefined);
    if (!stat?.isDirectory()) {
      throw new StowageError(ErrorCodes.VOLUME_DATA_MISSING,
        `the data directory ${path} of volume ${name} is missing or not a directory; it was changed outside stowage. ` +
        `Restore it, or remove the volume`, { volume: name });
    }
    return path;
  }

  async detach(): Promise<void> {
    // A directory needs no teardown.
  }

  async volumeStatus(name: string): Promise<Record<string, string>> {
    // Called right after get() for the same name, so the cache is fresh enough.
    const entry = this.registry.peek(name) ?? await this.registry.get(name);
    return entry ? { path: this.dataPath(entry), ...(entry.record.adopted ? { adopted: 'true' } : {}) } : {};
  }

  async describe(): Promise<Record<string, string>> {
    return {
      'vfs.path': this.options.path,
      'vfs.shared': String(this.options.shared),
      storeId: this.storeId,
    };
  }
}
