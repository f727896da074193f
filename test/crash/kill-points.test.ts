/**
 * kill -9 of the daemon at every step of Create, Mount, Unmount and Remove (see crash-daemon.ts
 * for how the points are chosen), a restart on the same state root and store, and the invariants
 * of crash-rig.ts after each restart. Each test lists every invariant that broke at every point.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { assertCliBuilt } from '../helpers/daemon-process.js';
import { listedNames, type PluginReply } from '../helpers/plugin-client.js';
import { systemSuite } from '../helpers/requirements.js';
import { checkCrashTools, describePoint, type KillPoint, type Outcome } from './crash-daemon.js';
import { CrashRig, VOLUME_OPTS } from './crash-rig.js';

const skip = systemSuite('strace', checkCrashTools());

/**
 * `write` #N: right after the Nth filesystem step of the request (or before a data write); the
 * sweep stops at the first N the request no longer reaches. `writev` #1: everything done, the
 * reply not yet sent.
 */
function* killPoints(maxSteps: number): Generator<KillPoint, void, boolean> {
  for (let n = 1; n <= maxSteps; n += 1) {
    const reached = yield { syscall: 'write', n };
    if (!reached) break;
  }
  yield { syscall: 'writev', n: 1 };
}

type Reply = PluginReply & { httpStatus: number };

/** True when the request got an answer without Err: the caller (Docker) saw it succeed. */
const succeeded = (outcome: Outcome<Reply>) => outcome.value !== undefined && !outcome.value.Err;

/**
 * Runs `step` at each kill point: `prepare` sets up what the request needs (on a healthy
 * daemon), the request runs under the kill point, `verify` checks the restarted daemon.
 */
async function sweep(
  rig: CrashRig,
  maxSteps: number,
  step: {
    prepare(n: number): Promise<string>;
    request(name: string, n: number): Promise<Reply>;
    verify(point: string, name: string, outcome: Outcome<Reply>, n: number): Promise<void>;
  },
): Promise<void> {
  const points = killPoints(maxSteps);
  let next = points.next();
  let n = 0;
  while (!next.done) {
    const point = next.value;
    n += 1;
    const name = await step.prepare(n);
    const outcome = await rig.crashAt(point, () => step.request(name, n));
    if (!outcome) return; // the daemon did not come back; recorded as a violation
    const label = describePoint(point);
    if (!outcome.killed && !succeeded(outcome)) {
      rig.violate(label, 'the operation succeeds when not interrupted', JSON.stringify(outcome.value ?? outcome.error?.message));
    }
    await rig.checkStore(label);
    await step.verify(label, name, outcome, n);
    next = points.next(outcome.killed);
  }
}

/** How many kill points really killed the daemon: proves the injection works. */
const killedAt = (rig: CrashRig) => rig.visited.filter((point) => !point.endsWith('(not reached)')).length;

function summarize(operation: string, rig: CrashRig): void {
  process.stderr.write(`\n[crash ${operation}] kill points: ${rig.visited.join(', ')}\n` +
    (rig.violations.length === 0 ? '  no invariant broke\n' : rig.report().map((line) => `  ${line}\n`).join('')));
}

describe.skipIf(skip)('kill -9 at every step of an operation, then restart', { timeout: 150_000 }, () => {
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
    await sweep(r, 40, {
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
    expect(killedAt(r)).toBeGreaterThan(5);
    expect(r.report()).toEqual([]);
  });

  it('Mount: a mount Docker saw fail leaves no count behind; a mount Docker holds stays counted', async () => {
    const r = await freshRig('mount');
    await r.setup('Create', { Name: 'vm', Opts: VOLUME_OPTS });
    await r.setup('Mount', { Name: 'vm', ID: 'held' });
    r.held.set('held', 'vm');
    await sweep(r, 40, {
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
        await r.checkRecreate(point, name);
        await r.checkMountsReturnToZero(point);
      },
    });
    // The held container stops: now the count must go to zero too.
    r.believedMounted.set('held', 'vm');
    r.held.clear();
    await r.checkMountsReturnToZero('end');
    summarize('mount', r);
    expect(killedAt(r)).toBeGreaterThan(5);
    expect(r.report()).toEqual([]);
  });

  it('Unmount: once Docker has sent Unmount for every ID, no count is left', async () => {
    const r = await freshRig('unmount');
    await r.setup('Create', { Name: 'vu', Opts: VOLUME_OPTS });
    await sweep(r, 40, {
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
    expect(killedAt(r)).toBeGreaterThan(5);
    expect(r.report()).toEqual([]);
  });

  it("Remove: a removed volume's data never comes back, a volume not removed keeps it", async () => {
    const r = await freshRig('remove');
    await sweep(r, 60, {
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
    expect(killedAt(r)).toBeGreaterThan(5);
    expect(r.report()).toEqual([]);
  });
});
