import { ErrorCodes, StowageError } from '../../core/errors.js';
import type { FsPort } from '../../core/fs-port.js';
import type { Logger } from '../../core/logger.js';
import type { DevicemapperOptions } from './dm-options.js';
import { isDmFailure, type Dmsetup } from './dmsetup.js';
import { evaluatePoolHealth, type PoolHealth } from './pool-health.js';
import { activatePool, adoptPool } from './pool-setup.js';
import type { PoolDevices } from './pool-devices.js';
import { loadState, lowestFreeId, saveState, type PoolStateFile } from './pool-state.js';
import { parsePoolStatus, parseThinStatus, type PoolStatus, type ThinStatus } from './status-parser.js';
import { parsePoolTable, parseThinTable } from './table-parser.js';

export interface ThinPoolDeps {
  dm: Dmsetup;
  devices: PoolDevices;
  fs: FsPort;
  log: Logger;
  nodeId: string;
  statePath: string;
}

const unavailable = (message: string) => new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, message);

/**
 * The thin pool and its metadata transactions. Every change of the pool's device set
 * (create_thin, create_snap, delete) is journalled in the state file first and committed with
 * `set_transaction_id`, so a crash in between is rolled back or forward at the next start.
 */
export class ThinPool {
  private current?: PoolStateFile;

  constructor(private readonly deps: ThinPoolDeps, private readonly options: DevicemapperOptions) {}

  get name(): string { return this.options.poolName; }
  get state(): PoolStateFile {
    if (!this.current) throw unavailable('the devicemapper backend was used before init()');
    return this.current;
  }
  get blockSectors(): number { return this.state.pool.blockSectors; }
  deviceName(thinId: number): string { return `${this.name}-t${thinId}`; }
  devicePath(thinId: number): string { return `/dev/mapper/${this.deviceName(thinId)}`; }

  save(): Promise<void> {
    return saveState(this.deps.fs, this.deps.statePath, this.state, this.deps.nodeId);
  }

  /** Adopts the active pool, or (re-)creates it on its devices; then finishes interrupted changes. */
  async open(): Promise<void> {
    const saved = await loadState(this.deps.fs, this.deps.statePath);
    const table = await this.deps.dm.table(this.name);
    const setup = { ...this.deps, options: this.options };
    this.current = table !== undefined ? adoptPool(setup, saved, table) : await activatePool(setup, saved);
    const status = await this.status();
    // A new state (transaction -1) starts at the pool's transaction id.
    if (this.current.transactionId < 0) this.current.transactionId = status.failed ? 0 : status.transactionId;
    await this.recover(status);
    await this.save();
  }

  /** Finishes a change interrupted by a crash, and follows a transaction id moved by others. */
  private async recover(status: PoolStatus): Promise<void> {
    const state = this.state;
    if (status.failed) {
      this.deps.log.error(`thin pool ${this.name} has failed; volumes cannot be used until its metadata is repaired`);
      return;
    }
    const tx = status.transactionId;
    const pending = state.pending;
    if (pending) {
      const ours = pending.op === 'delete' || tx === pending.toTx || (tx === pending.fromTx && state.pool.createdByStowage);
      if (ours) {
        await this.deleteQuietly(pending.thinId);
        this.forgetId(pending.thinId);
        this.deps.log.warn(`finished an interrupted ${pending.op} of thin id ${pending.thinId} in pool ${this.name}`);
      } else {
        state.foreignIds.push(pending.thinId);
        this.deps.log.warn(`thin id ${pending.thinId} of an interrupted create may belong to someone else; never using it again`);
      }
      state.pending = undefined;
    } else if (tx !== state.transactionId) {
      this.deps.log.warn(`thin pool ${this.name} has transaction id ${tx}, stowage recorded ${state.transactionId}: ` +
        'it was changed outside stowage');
    }
    state.transactionId = tx;
  }

  private async deleteQuietly(thinId: number): Promise<void> {
    await this.deps.dm.remove(this.deviceName(thinId));
    await this.message(`delete ${thinId}`).catch((err: unknown) => { if (!isDmFailure(err, 'no-data')) throw err; });
  }

  /** Drops every reference to a thin id from the state. */
  forgetId(thinId: number): void {
    const state = this.state;
    for (const [name, volume] of Object.entries(state.volumes)) {
      if (volume.thinId === thinId) delete state.volumes[name];
      else volume.snapshots = volume.snapshots.filter((s) => s.thinId !== thinId);
    }
    state.retained = state.retained.filter((r) => r.thinId !== thinId);
    for (const r of state.retained) r.snapshots = r.snapshots.filter((s) => s.thinId !== thinId);
  }

  message(text: string): Promise<void> {
    return this.deps.dm.message(this.name, text);
  }

  async status(): Promise<PoolStatus> {
    const text = await this.deps.dm.status(this.name);
    if (text === undefined) {
      throw unavailable(`thin pool ${this.name} is no longer active; restart stowage to activate it again from its devices`);
    }
    return parsePoolStatus(text);
  }

  async health(): Promise<PoolHealth> {
    return evaluatePoolHealth(this.name, await this.status(), this.blockSectors);
  }

  /** Refuses with E_STORAGE_FULL when the pool is nearly full or unhealthy. */
  async assertCanCreate(what: string, volume: string): Promise<void> {
    const health = await this.health();
    if (!health.canCreate) throw new StowageError(ErrorCodes.STORAGE_FULL, `cannot create ${what}: ${health.problem}`, { volume });
  }

  /**
   * Makes a new thin device (or, with `originId`, a snapshot of it) under the lowest free id,
   * skipping for good ids someone else holds. `register` records it; it runs in the same state
   * write that commits the change.
   */
  async createDevice(originId: number | undefined, register: (thinId: number) => void): Promise<number> {
    await this.settle();
    for (;;) {
      const id = lowestFreeId(this.state);
      try {
        await this.change('create', id, () => (originId === undefined ? this.message(`create_thin ${id}`) : this.snapshot(originId, id)),
          () => register(id));
        return id;
      } catch (err) {
        if (!isDmFailure(err, 'exists')) throw err;
        this.deps.log.warn(`thin id ${id} in pool ${this.name} is taken by someone else ("File exists"); skipping it for good`);
        this.state.foreignIds.push(id);
        await this.save();
      }
    }
  }

  private async snapshot(originId: number, id: number): Promise<void> {
    const origin = this.deviceName(originId);
    const active = (await this.deps.dm.table(origin)) !== undefined;
    if (active) await this.deps.dm.suspend(origin);
    try {
      await this.message(`create_snap ${id} ${originId}`);
    } finally {
      if (active) await this.deps.dm.resume(origin);
    }
  }

  /** Deletes a (deactivated) thin device; an id already gone counts as deleted. */
  async deleteDevice(thinId: number, unregister: () => void): Promise<void> {
    await this.settle();
    await this.change('delete', thinId, async () => {
      await this.message(`delete ${thinId}`).catch((err: unknown) => {
        if (!isDmFailure(err, 'no-data')) throw err;
        this.deps.log.warn(`thin id ${thinId} was already gone from pool ${this.name}`);
      });
    }, unregister);
  }

  /** A change whose commit failed earlier in this run is settled first, as at a restart. */
  private async settle(): Promise<void> {
    if (this.state.pending) await this.recover(await this.status());
  }

  private async change(op: 'create' | 'delete', thinId: number, perform: () => Promise<void>, apply: () => void): Promise<void> {
    const state = this.state;
    const fromTx = state.transactionId;
    state.pending = { op, thinId, fromTx, toTx: fromTx + 1 };
    await this.save();
    try {
      await perform();
    } catch (err) {
      state.pending = undefined;
      await this.save();
      throw err;
    }
    state.transactionId = await this.commit(fromTx);
    apply();
    state.pending = undefined;
    await this.save();
  }

  /** `set_transaction_id`, following the pool's id when someone else moved it. */
  private async commit(fromTx: number): Promise<number> {
    try {
      await this.message(`set_transaction_id ${fromTx} ${fromTx + 1}`);
      return fromTx + 1;
    } catch (err) {
      if (!isDmFailure(err, 'invalid')) throw err;
      const status = await this.status();
      if (status.failed) throw err;
      this.deps.log.warn(`thin pool ${this.name} is at transaction ${status.transactionId}, not ${fromTx}: someone else changes it too`);
      await this.message(`set_transaction_id ${status.transactionId} ${status.transactionId + 1}`);
      return status.transactionId + 1;
    }
  }

  /** Activates a thin device and returns its /dev/mapper path (idempotent). */
  async activateDevice(thinId: number, sectors: number, label: string): Promise<string> {
    const name = this.deviceName(thinId);
    try {
      await this.deps.dm.create(name, `0 ${sectors} thin /dev/mapper/${this.name} ${thinId}`);
    } catch (err) {
      if (isDmFailure(err, 'no-data')) {
        throw new StowageError(ErrorCodes.VOLUME_DATA_MISSING, `thin device ${thinId} of ${label} is missing from pool ` +
          `${this.name} (deleted outside stowage?); its data is gone`, { cause: err });
      }
      // EBUSY on create: a device of that name is active already; make sure it is the right one.
      const table = isDmFailure(err, 'busy') ? await this.deps.dm.table(name) : undefined;
      if (table === undefined) throw err;
      const mapped = parseThinTable(table);
      if (mapped.thinId !== thinId || mapped.lengthSectors !== sectors) {
        throw new StowageError(ErrorCodes.STATE_CORRUPT, `device-mapper device ${name} is active but maps thin id ` +
          `${mapped.thinId} with ${mapped.lengthSectors} sectors, not ${thinId} with ${sectors}; remove it ` +
          `(dmsetup remove ${name}) and try again`);
      }
    }
    const path = this.devicePath(thinId);
    if (!(await this.deps.fs.stat(path).then(() => true, () => false))) await this.deps.dm.mknodes(name);
    return path;
  }

  async deactivateDevice(thinId: number, label: string): Promise<void> {
    const name = this.deviceName(thinId);
    await this.deps.dm.remove(name).catch((err: unknown) => {
      if (!isDmFailure(err, 'busy')) throw err;
      throw new StowageError(ErrorCodes.VOLUME_IN_USE, `thin device ${name} of ${label} stays open (a mount or a process ` +
        `holds it; see dmsetup info ${name}); close it and try again`, { cause: err });
    });
  }

  async deviceStatus(thinId: number): Promise<ThinStatus | undefined> {
    const text = await this.deps.dm.status(this.deviceName(thinId));
    return text === undefined ? undefined : parseThinStatus(text);
  }

  /** The metadata device of the active pool, as a path tools such as thin_delta can open. */
  async metadataDevicePath(): Promise<string> {
    const table = parsePoolTable((await this.deps.dm.table(this.name)) ?? '');
    return this.deps.devices.pathOf(table.metadataDevice);
  }
}
