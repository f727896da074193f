/**
 * kill -9 of the daemon between every two durable steps of Create, Mount, Unmount and Remove (see
 * crash-daemon.ts for how a kill point is armed), a restart on the same state root and store, and
 * the invariants of crash-rig.ts after each restart. Each test lists every invariant that broke at
 * every point.
 *
 * A kill point names the call that changes the disk next: `rename` #2 kills the daemon on entering
 * the request's second rename, i.e. right after every step before it and before that rename. One
 * point before each such call (and `writev` #1, the reply) visits every state a crash can leave
 * between two durable steps; a kill anywhere else (after a read, a stat, a data write to a temp
 * file not yet renamed or linked) leaves the same disk as the point before it. Sweeping `write` #N
 * instead (libuv's eventfd after each finished call) visits the same states dozens of times over,
 * one daemon restart each (a full `write` sweep of the four operations takes about two minutes
 * and broke nothing these points do not). Each test first traces one uninterrupted request and
 * checks that the durable calls listed below are the ones it makes, counted per system call (a
 * remove's background purge races its reply, so their order is not fixed), and every point must
 * then kill the daemon: when the code takes other steps, the test fails and says what they are.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { assertCliBuilt } from '../helpers/daemon-process.js';
import { listedNames, type PluginReply } from '../helpers/plugin-client.js';
import { systemSuite } from '../helpers/requirements.js';
import { DURABLE_CALLS, checkCrashTools, describePoint, traceDurableCalls, type KillPoint, type Outcome } from './crash-daemon.js';
import { CrashRig, VOLUME_OPTS } from './crash-rig.js';

const skip = systemSuite('strace', checkCrashTools());

/** A kill point and the state the request leaves when killed there. */
interface Step extends KillPoint {
  leaves: string;
  /** Mount: the mount record is saved at this point, so a killed Mount leaves a count. */
  recordSaved?: boolean;
  /**
   * Made on a thread of libuv's pool after calls of the same kind on the main thread: strace
   * counts `when=N` per thread, so no N names this call alone. Counted in the trace, no kill point.
   */
  onPoolThread?: boolean;
}

/** One durable call of the request (see DURABLE_CALLS), in order, and the state right before it. */
type Call = [syscall: (typeof DURABLE_CALLS)[number], leaves: string, more?: { recordSaved?: boolean; onPoolThread?: boolean }];

/** One kill point right before each durable call: `unlink` #3 is the request's third unlink. */
function pointsBefore(calls: readonly Call[]): Step[] {
  const seen = new Map<string, number>();
  return calls.map(([syscall, leaves, more]) => {
    const n = (seen.get(syscall) ?? 0) + 1;
    seen.set(syscall, n);
    return { syscall, n, leaves, ...more };
  });
}

/** The reply: every step done, Docker told nothing. */
const REPLY: Call = ['writev', 'everything done, no reply sent'];

/*
 * The name lock in <store>/.stowage/cluster/locks is created in place (O_EXCL, a local store) by
 * an openat, which is no kill point: a kill between its creation and its content leaves an empty
 * lock file, which the restarted daemon takes over after 2 s (cluster-lock.test.ts). So is the
 * intent record in <store>/.stowage/journal: a kill between its openat and its write leaves an
 * empty one, which the next create or remove of the name discards (vfs-recovery.test.ts). The
 * first point of Create and Remove below sees the lock taken and the intent recorded.
 */

const CREATE: Call[] = [
  ['mkdir', 'lock taken, intent recorded, no data directory'],
  ['fchown', 'data directory made (mode 0700, root)'],
  ['fchmod', 'owner set, mode not'],
  ['link', 'mode set, registry temp written (not flushed)'],
  ['unlink', 'registry entry linked (temp still there)'],
  ['unlink', 'registered, intent record still there'],
  ['unlink', 'intent removed, lock held'],
  REPLY,
  // The group flush of the registry entry and its directory starts FLUSH_DELAY_MS after the
  // entry was linked, well after the reply.
  ['fsync', 'answered, registry entry not flushed'],
  ['fsync', 'answered, registry entry flushed, its directory not'],
];

/*
 * A mount record is saved by appending a line to <root>/mounts.log (a `write`, no kill point:
 * the crash sweep of engine-mounts.test.ts aims at it by path). Before it nothing on disk has
 * changed for a vfs volume (attaching a directory writes nothing), so the first point of Mount
 * sees the record saved, and Unmount's record is saved when its reply is sent.
 *
 * Cluster layout 2: the node's record no longer holds its mounts, so neither Mount nor Unmount
 * rewrites it (Mount's `rename` of the record and Unmount's deferred one are gone). The mount
 * marker <store>/.stowage/cluster/mounts/<node>/vm is made by an O_EXCL openat (no kill point)
 * on a volume's first mount on the node; the Mount swept here is vm's second (ID "held" holds
 * it), so its marker exists already. Unmount here ends vu's last mount: the marker is unlinked
 * before the reply, and a daemon killed right before that unlink leaves a marker that its next
 * start removes (the mount table has no mount of vu), checked by the invariants after restart.
 * A mount takes the name's lock only while something else holds it (mount-lock.ts), so the only
 * durable call left is the reply: a kill before it leaves the record saved.
 */
const MOUNT: Call[] = [
  ['writev', 'mount record appended, no lock taken, no reply sent', { recordSaved: true }],
];

const UNMOUNT: Call[] = [
  ['unlink', 'mount record appended, mount marker still there'],
  REPLY,
];

const REMOVE: Call[] = [
  ['rename', 'lock taken, intent recorded, data in place'],
  ['unlink', 'data moved to .stowage/deleting, still registered'],
  ['pwrite64', 'registry entry unlinked, epoch not bumped'],
  ['unlink', 'epoch bumped, intent record still there'],
  ['unlink', 'intent removed, lock held, data not purged'],
  REPLY,
  // The background purge, through directory descriptors on a pool thread, after the answer:
  // its unlink of the marker file, then the rmdir of the moved directory (the thread's first).
  ['unlink', 'answered, purge not begun', { onPoolThread: true }],
  ['rmdir', 'purge half done (the marker file gone, its directory left)'],
  // The group flush of the registry directory starts FLUSH_DELAY_MS after the unlink.
  ['fsync', 'answered, removal not flushed'],
];

type Reply = PluginReply & { httpStatus: number };

/** True when the request got an answer without Err: the caller (Docker) saw it succeed. */
const succeeded = (outcome: Outcome<Reply>) => outcome.value !== undefined && !outcome.value.Err;

/**
 * Runs `step` once under a plain strace, to check that `calls` are all the durable calls the
 * request makes, then at each kill point: `prepare` sets up what the request needs (on a
 * healthy daemon), the request runs under the kill point, `verify` checks the restarted daemon.
 * Run 0 is the traced one, without a crash.
 */
async function sweep(
  rig: CrashRig,
  calls: readonly Call[],
  step: {
    prepare(n: number): Promise<string>;
    request(name: string, n: number): Promise<Reply>;
    verify(point: string, name: string, outcome: Outcome<Reply>, n: number): Promise<void>;
  },
): Promise<void> {
  const traced = await step.prepare(0);
  const trace = await traceDurableCalls(rig.run, () => step.request(traced, 0));
  const expected = calls.map(([syscall]) => syscall);
  // Compared as counts per system call, not in order: a remove's purge runs in the background
  // and races the lock release and the reply, so its calls land on either side of them. A kill
  // point is "before the nth call of X", so the same counts mean the same points get hit.
  const counts = (list: readonly string[]) => [...list].sort().join(',');
  if (counts(trace.calls) !== counts(expected)) {
    rig.violate('trace', 'the kill points cover every durable step',
      `the request made ${JSON.stringify(trace.calls)}, the kill points expect ${JSON.stringify(expected)}: update the list`);
  }
  await step.verify('traced, no crash', traced, { killed: false, ...trace }, 0);
  let n = 0;
  for (const point of pointsBefore(calls)) {
    if (point.onPoolThread) continue;
    n += 1;
    const name = await step.prepare(n);
    const outcome = await rig.crashAt(point, () => step.request(name, n));
    if (!outcome) return; // the daemon did not come back; recorded as a violation
    const label = `${describePoint(point)} (${point.leaves})`;
    if (!outcome.killed) {
      rig.violate(label, 'every kill point is reached', `the request never made call ${describePoint(point)}: the steps changed, update the list`);
      if (!succeeded(outcome)) rig.violate(label, 'the operation succeeds when not interrupted', JSON.stringify(outcome.value ?? outcome.error?.message));
    }
    await rig.checkStore(label);
    await step.verify(label, name, outcome, n);
  }
}

function summarize(operation: string, rig: CrashRig): void {
  process.stderr.write(`\n[crash ${operation}] kill points: ${rig.visited.join(', ')}\n` +
    (rig.released.length === 0 ? '' : `  released by stowage release: ${rig.released.join(', ')}\n`) +
    (rig.violations.length === 0 ? '  no invariant broke\n' : rig.report().map((line) => `  ${line}\n`).join('')));
}

describe.skipIf(skip)('kill -9 between every two durable steps of an operation, then restart', { timeout: 60_000 }, () => {
  let rig: CrashRig | undefined;

  beforeAll(() => assertCliBuilt());
  afterEach(async () => {
    await rig?.dispose();
    rig = undefined;
  });

  async function freshRig(label: string): Promise<CrashRig> {
    rig = await CrashRig.create(label);
    await rig.start();
    return rig;
  }

  it('Create: a crashed create leaves nothing that breaks the next create of the name', async () => {
    const r = await freshRig('create');
    await sweep(r, CREATE, {
      prepare: async (n) => `c${n}`,
      request: (name) => r.call('Create', { Name: name, Opts: VOLUME_OPTS }),
      verify: async (point, name, outcome) => {
        if (succeeded(outcome) && !(await listedNames(r.socket)).includes(name)) {
          r.violate(point, 'a volume whose create answered stays created', `${name} is not listed after the restart`);
        }
        await r.checkRecreate(point, name);
        await r.checkMountsReturnToZero(point);
      },
    });
    summarize('create', r);
    expect(r.report()).toEqual([]);
  });

  it('Mount: a mount Docker saw fail leaves no count, or one `stowage release` clears; a mount Docker holds stays counted', async () => {
    const r = await freshRig('mount');
    await r.setup('Create', { Name: 'vm', Opts: VOLUME_OPTS });
    await writeFile(join(r.store, 'vm', 'marker'), 'data of vm\n');
    await r.setup('Mount', { Name: 'vm', ID: 'held' });
    r.held.set('held', 'vm');
    await sweep(r, MOUNT, {
      prepare: async () => 'vm',
      request: (name, n) => r.call('Mount', { Name: name, ID: `mnt${n}` }),
      verify: async (point, name, outcome, n) => {
        if (succeeded(outcome)) r.believedMounted.set(`mnt${n}`, name);
        // A running container still uses the volume: removing it must be refused.
        const removal = await r.call('Remove', { Name: name }).catch((err: unknown) => ({ Err: (err as Error).message }));
        if (!removal.Err) {
          r.violate(point, 'a mount Docker still holds survives the crash', `Remove of ${name} succeeded while ID "held" is mounted`);
          await r.setup('Create', { Name: name, Opts: VOLUME_OPTS });
          await r.setup('Mount', { Name: name, ID: 'held' });
        }
        await r.checkRecreate(point, name, { file: 'marker', mustBe: 'present' });
        // No engine here (see checkMountsReturnToZero): a Mount killed after its record was saved
        // leaves a count that only `stowage release vm mntN` may drop. With an engine the
        // reconciliation drops it (engine-mounts.test.ts).
        const unanswered = new Map(!succeeded(outcome) && pointsBefore(MOUNT)[n - 1]?.recordSaved ? [[`mnt${n}`, name] as const] : []);
        await r.checkMountsReturnToZero(point, new Map(), unanswered);
      },
    });
    // The held container stops: now the count must go to zero too.
    r.believedMounted.set('held', 'vm');
    r.held.clear();
    await r.checkMountsReturnToZero('end');
    summarize('mount', r);
    // Every point from "mount record saved" on left a count, and the release cleared it.
    expect(r.released).toEqual(pointsBefore(MOUNT).flatMap((step, i) => (step.recordSaved ? [`vm/mnt${i + 1}`] : [])));
    expect(r.report()).toEqual([]);
  });

  it('Unmount: once Docker has sent Unmount for every ID, no count is left', async () => {
    const r = await freshRig('unmount');
    await r.setup('Create', { Name: 'vu', Opts: VOLUME_OPTS });
    await sweep(r, UNMOUNT, {
      prepare: async (n) => {
        await r.setup('Mount', { Name: 'vu', ID: `um${n}` });
        r.believedMounted.set(`um${n}`, 'vu');
        return 'vu';
      },
      request: (name, n) => r.call('Unmount', { Name: name, ID: `um${n}` }),
      verify: async (point, name, outcome, n) => {
        const replay = new Map<string, string>();
        // No answer: Docker may send this Unmount again once the plugin is back.
        if (!succeeded(outcome)) replay.set(`um${n}`, name);
        r.believedMounted.delete(`um${n}`);
        await r.checkRecreate(point, name);
        await r.checkMountsReturnToZero(point, replay);
      },
    });
    summarize('unmount', r);
    expect(r.report()).toEqual([]);
  });

  it("Remove: a removed volume's data never comes back, a volume not removed keeps it", async () => {
    const r = await freshRig('remove');
    // A store's first remove makes its epoch file (a temp renamed into place); every later one
    // writes over it in place. One remove first, so the sweep goes through the steps of the latter.
    await r.setup('Create', { Name: 'first', Opts: VOLUME_OPTS });
    await r.setup('Remove', { Name: 'first' });
    await sweep(r, REMOVE, {
      prepare: async (n) => {
        const name = `r${n}`;
        await r.setup('Create', { Name: name, Opts: VOLUME_OPTS });
        await writeFile(join(r.store, name, 'marker'), `data of ${name}\n`);
        return name;
      },
      request: (name) => r.call('Remove', { Name: name }),
      verify: async (point, name, outcome) => {
        const listed = (await listedNames(r.socket)).includes(name);
        if (succeeded(outcome) && listed) {
          r.violate(point, 'a volume whose remove answered stays removed', `${name} is listed again after the restart`);
        }
        await r.checkRecreate(point, name, { file: 'marker', mustBe: listed ? 'present' : 'absent' });
        await r.checkMountsReturnToZero(point);
      },
    });
    summarize('remove', r);
    expect(r.report()).toEqual([]);
  });
});
