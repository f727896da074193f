import { ErrorCodes, StowageError } from '../../core/errors.js';
import type { FsPort } from '../../core/fs-port.js';
import type { Logger } from '../../core/logger.js';
import type { DevicemapperOptions } from './dm-options.js';
import { isDmFailure, type Dmsetup } from './dmsetup.js';
import { evaluatePoolHealth, type PoolHealth } from './pool-health.js';
import { checkStateAgainstPool, newTransactionId, ownership, poolMismatch } from './pool-ownership.js';
import { activatePool, adoptPool } from './pool-setup.js';
import type { PoolDevices } from './pool-devices.js';
import { loadState, nextFreeId, saveState, usedIds, type PoolStateFile } from './pool-state.js';
import { parsePoolStatus, parseThinStatus, type PoolStatus, type ThinStatus } from './status-parser.js';
import { parseLs, parsePoolTable, parseThinTable } from './table-parser.js';
import { highestThinId, type ThinDump } from './thin-dump-parser.js';

export interface ThinPoolDeps {
  dm: Dmsetup;
  devices: PoolDevices;
  fs: FsPort;
  log: Logger;
  nodeId: string;
  statePath: string;
  newTransactionId?: () => number;
}

const unavailable = (message: string) => new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, message);

/** A create whose device cannot be proven ours: another daemon moved the pool between claim and commit. */
class ClaimLost extends Error {}

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

  /**
   * Adopts the active pool, or (re-)creates it on its devices; checks the state against the
   * pool's own metadata (refusing a state that names devices the pool holds for someone else);
   * then finishes interrupted changes.
   */
  async open(): Promise<void> {
    const saved = await loadState(this.deps.fs, this.deps.statePath);
    const table = await this.deps.dm.table(this.name);
    const setup = { ...this.deps, options: this.options };
    let dump: ThinDump | undefined;
    let fresh = false;
    if (table !== undefined) {
      this.current = adoptPool(setup, saved, table);
    } else {
      const activated = await activatePool(setup, saved);
      this.current = activated.state;
      dump = activated.dump;
      fresh = saved === undefined;
    }
    const status = await this.status();
    // A new state (transaction -1) starts at the pool's transaction id.
    if (this.current.transactionId < 0) this.current.transactionId = status.failed ? 0 : status.transactionId;
    if (status.failed) {
      this.deps.log.error(`thin pool ${this.name} has failed; volumes cannot be used until its metadata is repaired`);
    } else if (!fresh) {
      dump ??= await this.dumpMetadata();
      this.reconcile(dump);
      await this.recover(dump);
    }
    await this.save();
  }

  /** Refuses a state the pool's metadata contradicts; raises the id high-water mark above every id in the pool. */
  private reconcile(dump: ThinDump): void {
    const state = this.state;
    const check = checkStateAgainstPool(state, dump);
    const mismatch = poolMismatch(check, false);
    if (mismatch) {
      throw new StowageError(ErrorCodes.STATE_CORRUPT, `devicemapper state ${this.deps.statePath} does not match thin pool ` +
        `${this.name}: ${mismatch}. The state is older than the pool (restored from a backup?) or a copy that another ` +
        'daemon also runs from; stowage stops rather than mount or delete data that may be someone else\'s. Start it with ' +
        'the state that belongs to this pool, or move this one aside to adopt the pool afresh (volumes it names are then ' +
        'forgotten, never deleted)');
    }
    if (!check.txExplained) {
      this.deps.log.warn(`thin pool ${this.name} has transaction id ${dump.transactionId}, stowage recorded ` +
        `${state.transactionId}: it was changed outside this daemon; the devices this state names are still its own`);
    }
    for (const missing of check.missing) {
      if (missing.label.startsWith('volume ')) {
        this.deps.log.error(`${missing.label} (thin id ${missing.ref.thinId}) is missing from pool ${this.name} ` +
          '(deleted outside stowage?); its data is gone');
      }
    }
    state.nextThinId = Math.max(state.nextThinId ?? 0, highestThinId(dump) + 1, ...[...usedIds(state)].map((id) => id + 1));
  }

  /**
   * Finishes a change interrupted by a crash, touching the pool only for a device its metadata
   * proves is ours: created under this change's claim, or (a delete) under the deleted device's
   * recorded transaction.
   */
  private async recover(dump: ThinDump): Promise<void> {
    const state = this.state;
    const pending = state.pending;
    if (!pending) return;
    const { op, thinId } = pending;
    if (pending.claimTx === undefined) {
      // Written before claims: nothing proves whose the id is now, so the pool is left alone.
      if (op === 'create') state.foreignIds.push(thinId);
      this.deps.log.warn(`an interrupted ${op} of thin id ${thinId} in pool ${this.name} cannot be proven ours; ` +
        (op === 'create' ? 'the id is never used again' : 'its volume stays listed: remove it again'));
      state.pending = undefined;
      return;
    }
    const owner = ownership(dump, thinId, op === 'create' ? pending.claimTx : pending.createdInTx);
    if (owner === 'ours') {
      await this.deleteQuietly(thinId);
      this.forgetId(thinId);
      this.deps.log.warn(`${op === 'create' ? 'rolled back' : 'finished'} an interrupted ${op} of thin id ${thinId} in pool ${this.name}`);
    } else if (owner === 'foreign') {
      state.foreignIds.push(thinId);
      if (op === 'delete') this.forgetId(thinId);
      const device = dump.devices.get(thinId)!;
      this.deps.log.warn(`thin id ${thinId} of an interrupted ${op} now belongs to someone else (created under transaction ` +
        `${device.transaction}); left alone and never used again`);
    } else if (op === 'delete') {
      this.forgetId(thinId);
    }
    state.pending = undefined;
  }

  /** The pool's list of thin devices, read on a metadata snapshot so the pool stays live. */
  async dumpMetadata(): Promise<ThinDump> {
    const meta = await this.metadataDevicePath();
    for (let attempt = 1; ; attempt += 1) {
      try {
        await this.message('reserve_metadata_snap');
        break;
      } catch (err) {
        if (!isDmFailure(err, 'busy')) throw err;
        if (attempt >= 20) {
          throw unavailable(`thin pool ${this.name} holds a metadata snapshot that is not released (a backup running?), ` +
            `so stowage cannot read which thin devices exist; if nothing uses it: dmsetup message ${this.name} 0 release_metadata_snap`);
        }
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    }
    try {
      return await this.deps.devices.dumpMetadata(meta, true);
    } finally {
      await this.message('release_metadata_snap');
    }
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
   * Makes a new thin device (or, with `originId`, a snapshot of it) under the next unused id;
   * ids are never reused, and ids someone else holds are skipped for good. `register` records
   * it with the transaction it was created under; it runs in the state write that commits it.
   */
  async createDevice(originId: number | undefined, register: (thinId: number, createdInTx: number) => void): Promise<number> {
    await this.finishPendingChange();
    for (let lost = 0; ;) {
      const id = nextFreeId(this.state);
      try {
        await this.change('create', id, () => (originId === undefined ? this.message(`create_thin ${id}`) : this.snapshot(originId, id)),
          (claimTx) => register(id, claimTx));
        return id;
      } catch (err) {
        if (err instanceof ClaimLost && lost < 5) {
          lost += 1;
          this.deps.log.warn(`thin id ${id} in pool ${this.name} was made while another daemon changed the pool, so it ` +
            'cannot be proven ours; leaving it (it holds nothing) and using another id');
        } else if (isDmFailure(err, 'exists')) {
          this.deps.log.warn(`thin id ${id} in pool ${this.name} is taken by someone else ("File exists"); skipping it for good`);
        } else {
          throw err;
        }
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
  async deleteDevice(thinId: number, createdInTx: number | undefined, unregister: () => void): Promise<void> {
    await this.finishPendingChange();
    await this.change('delete', thinId, async () => {
      await this.message(`delete ${thinId}`).catch((err: unknown) => {
        if (!isDmFailure(err, 'no-data')) throw err;
        this.deps.log.warn(`thin id ${thinId} was already gone from pool ${this.name}`);
      });
    }, unregister, createdInTx);
  }

  /** A change whose commit failed earlier in this run is finished or undone first, as at a restart. */
  private async finishPendingChange(): Promise<void> {
    if (this.state.pending) {
      await this.recover(await this.dumpMetadata());
      await this.save();
    }
  }

  /**
   * One pool change: journalled, then the pool moved to a fresh transaction id of our own (the
   * claim) before the message, and to another after it. When nobody moved the pool in between,
   * a device the message created carries our claim in the pool's metadata: proof it is ours.
   */
  private async change(op: 'create' | 'delete', thinId: number, perform: () => Promise<void>,
    apply: (claimTx: number) => void, createdInTx?: number): Promise<void> {
    const state = this.state;
    const next = this.deps.newTransactionId ?? newTransactionId;
    const claimTx = next();
    const doneTx = next();
    state.pending = { op, thinId, claimTx, doneTx, ...(createdInTx !== undefined ? { createdInTx } : {}) };
    if (op === 'create') state.nextThinId = Math.max(state.nextThinId ?? 0, thinId + 1);
    await this.save();
    try {
      await this.moveTransaction(claimTx);
      await perform();
    } catch (err) {
      state.pending = undefined;
      await this.save();
      throw err;
    }
    if (!(await this.tryTransaction(claimTx, doneTx))) {
      if (op === 'create' && ownership(await this.dumpMetadata(), thinId, claimTx) !== 'ours') {
        state.pending = undefined;
        await this.save();
        throw new ClaimLost();
      }
      await this.moveTransaction(doneTx);
    }
    state.transactionId = doneTx;
    apply(claimTx);
    state.pending = undefined;
    await this.save();
  }

  /** `set_transaction_id` from wherever the pool is to `target`, following others' moves. */
  private async moveTransaction(target: number): Promise<void> {
    let current = this.state.transactionId;
    for (let attempt = 1; ; attempt += 1) {
      if (await this.tryTransaction(current, target)) return;
      const status = await this.status();
      if (status.failed || status.transactionId === current || attempt >= 5) {
        throw unavailable(`thin pool ${this.name} refused set_transaction_id ${current} ${target} ` +
          `(it is at ${status.failed ? 'Fail' : status.transactionId}); try again`);
      }
      this.deps.log.warn(`thin pool ${this.name} is at transaction ${status.transactionId}, not ${current}: someone else changes it too`);
      current = status.transactionId;
    }
  }

  /** True when the pool moved from `from` to `to`; false when it was not at `from`. */
  private async tryTransaction(from: number, to: number): Promise<boolean> {
    try {
      await this.message(`set_transaction_id ${from} ${to}`);
      this.state.transactionId = to;
      return true;
    } catch (err) {
      if (!isDmFailure(err, 'invalid')) throw err;
      return false;
    }
  }

  /**
   * Activates a thin device and returns its /dev/mapper path (idempotent). `readOnly` makes a
   * new activation read-only; a device already active stays as it is.
   */
  async activateDevice(thinId: number, sectors: number, label: string, readOnly = false): Promise<string> {
    const name = this.deviceName(thinId);
    try {
      await this.deps.dm.create(name, `0 ${sectors} thin /dev/mapper/${this.name} ${thinId}`, readOnly);
    } catch (err) {
      if (isDmFailure(err, 'no-data')) {
        throw new StowageError(ErrorCodes.VOLUME_DATA_MISSING, `thin device ${thinId} of ${label} is missing from pool ` +
          `${this.name} (deleted outside stowage?); its data is gone`, { cause: err });
      }
      // EBUSY on create: a device of that name is active already; make sure it is the right one.
      const table = isDmFailure(err, 'busy') ? await this.deps.dm.table(name) : undefined;
      if (table === undefined) throw err;
      const mapped = parseThinTable(table);
      const poolDevice = await this.deps.dm.devno(this.name);
      if (mapped.thinId !== thinId || mapped.lengthSectors !== sectors || mapped.poolDevice !== poolDevice) {
        throw new StowageError(ErrorCodes.STATE_CORRUPT, `device-mapper device ${name} is active but maps thin id ` +
          `${mapped.thinId} of pool device ${mapped.poolDevice} with ${mapped.lengthSectors} sectors, not ${thinId} of ` +
          `${this.name} (${poolDevice ?? 'inactive'}) with ${sectors}; it is not this volume's: find out whose it is ` +
          `(dmsetup table ${name}) and remove it, then try again`);
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

  /** Names of the active device-mapper devices (one `dmsetup ls`). */
  async activeDevices(): Promise<Set<string>> {
    return new Set(parseLs(await this.deps.dm.ls()).map((d) => d.name));
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
