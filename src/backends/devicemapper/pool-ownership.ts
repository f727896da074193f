/**
 * Which thin devices are provably ours. A device is ours when the pool's own metadata lists its
 * id with the transaction id we recorded for it: every change stowage makes first moves the
 * pool to a random transaction id of its own (its claim), so a device created under that claim
 * was created by that change and no other. Transaction numbers alone prove nothing: two daemons
 * on one pool see the same ones.
 */
import { randomInt } from 'node:crypto';
import type { PoolStateFile } from './pool-state.js';
import type { ThinDump } from './thin-dump-parser.js';

/** A fresh transaction id nobody else will pick (48 random bits; the kernel takes 64). */
export function newTransactionId(): number {
  return randomInt(1, 2 ** 48);
}

export interface DeviceRef {
  thinId: number;
  /** The pool transaction id the device was created under; absent in state written before it was recorded. */
  createdInTx?: number;
}

export interface RecordedDevice {
  /** For people: `volume a`, `snapshot s of volume a`, `retained data of a`. */
  label: string;
  ref: DeviceRef;
}

/** Every thin device the state names. */
export function recordedDevices(state: PoolStateFile): RecordedDevice[] {
  const out: RecordedDevice[] = [];
  for (const volume of Object.values(state.volumes)) {
    // A volume whose create did not finish is rolled back at start: its device must be ours too.
    out.push({ label: `volume ${volume.record.name}${volume.ready ? '' : ' (being created)'}`, ref: volume });
    for (const s of volume.snapshots) out.push({ label: `snapshot ${s.name} of volume ${volume.record.name}`, ref: s });
  }
  for (const r of state.retained) {
    out.push({ label: `retained data of ${r.name}`, ref: r });
    for (const s of r.snapshots) out.push({ label: `snapshot ${s.name} of retained ${r.name}`, ref: s });
  }
  return out;
}

export type Ownership = 'ours' | 'foreign' | 'absent';

export function ownership(dump: ThinDump, thinId: number, createdInTx: number | undefined): Ownership {
  const device = dump.devices.get(thinId);
  if (!device) return 'absent';
  return createdInTx !== undefined && device.transaction === createdInTx ? 'ours' : 'foreign';
}

export interface PoolCheck {
  /** Devices the state names that the pool holds under another creation transaction. */
  conflicts: string[];
  missing: RecordedDevice[];
  /** Devices the state names that the pool holds as recorded. */
  matched: number;
  /** The pool's transaction id is one this state's own changes leave behind. */
  txExplained: boolean;
}

/**
 * Compares the state with the pool's metadata. Entries from state written before creation
 * transactions were recorded learn theirs here, but only when the pool proves they predate the
 * state: nothing changed since it was written, or the device was created before its last change.
 */
export function checkStateAgainstPool(state: PoolStateFile, dump: ThinDump): PoolCheck {
  const pending = state.pending;
  const explained = [state.transactionId, pending?.claimTx, pending?.doneTx, pending?.toTx];
  const txExplained = explained.includes(dump.transactionId);
  const check: PoolCheck = { conflicts: [], missing: [], matched: 0, txExplained };
  for (const recorded of recordedDevices(state)) {
    const { ref, label } = recorded;
    const device = dump.devices.get(ref.thinId);
    if (!device) {
      check.missing.push(recorded);
    } else if (ref.createdInTx === undefined
      && (dump.transactionId === state.transactionId || device.transaction < state.transactionId)) {
      ref.createdInTx = device.transaction;
      check.matched += 1;
    } else if (device.transaction === ref.createdInTx) {
      check.matched += 1;
    } else {
      check.conflicts.push(`${label} names thin id ${ref.thinId}, but the pool's device ${ref.thinId} was created under ` +
        `transaction ${device.transaction}, not ${ref.createdInTx ?? `before ${state.transactionId}`}`);
    }
  }
  return check;
}

/**
 * Why the pool is not the one the state describes, or undefined when it is. `strict` (a pool
 * about to be activated from its devices) also refuses a pool that moved on while the state
 * names no device to prove it is the same pool.
 */
export function poolMismatch(check: PoolCheck, strict: boolean): string | undefined {
  if (check.conflicts.length > 0) return check.conflicts.join('; ');
  if (check.txExplained) return undefined;
  const named = check.matched + check.missing.length;
  if (named > 0 && check.matched === 0) {
    return `none of the thin devices it names is in the pool (${check.missing.map((m) => `${m.label} (thin id ${m.ref.thinId})`).join(', ')})`;
  }
  if (named === 0 && strict) return 'its transaction id differs and the state names no thin device that would prove it is the same pool';
  return undefined;
}
