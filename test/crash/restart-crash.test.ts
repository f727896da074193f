/**
 * kill -9 of the daemon while it starts on a store that earlier crashes left half-done (a create
 * killed after registering, a remove killed after moving the data away): the
 * start-up repairs whatever it repairs, and a crash in the middle of that must leave a store the
 * next start still serves, with the same invariants as after any other crash.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { assertCliBuilt } from '../helpers/daemon-process.js';
import { listedNames } from '../helpers/plugin-client.js';
import { systemSuite } from '../helpers/requirements.js';
import { checkCrashTools } from './crash-daemon.js';
import { CrashRig, VOLUME_OPTS } from './crash-rig.js';

const skip = systemSuite('strace', checkCrashTools());

/** The calls that change a store; a start-up that repairs nothing makes few of them. */
const SYSCALLS = ['mkdir', 'link', 'rename', 'unlink', 'rmdir'];
const MAX_PER_SYSCALL = 3;

describe.skipIf(skip)('kill -9 while the daemon starts on a store left by crashes', { timeout: 120_000 }, () => {
  let rig: CrashRig | undefined;

  beforeAll(() => assertCliBuilt());
  afterEach(async () => {
    await rig?.dispose();
    rig = undefined;
  });

  it('always starts again, and the store ends up consistent', async () => {
    const r = rig = await CrashRig.create('restart');
    await r.start();
    // A create killed after registering, its intent record still there (see kill-points.test.ts),
    // left to the first start.
    const creation = await r.crashAt({ syscall: 'unlink', n: 3 }, () => r.call('Create', { Name: 'half-created', Opts: VOLUME_OPTS }));
    if (!creation?.killed) r.violate('create of half-created', 'every kill point is reached', 'the Create never made its unlink #3: the steps changed');
    const removed: string[] = [];
    let alive = true;
    let n = 0;
    for (const syscall of SYSCALLS) {
      for (let k = 1; k <= MAX_PER_SYSCALL && alive; k += 1) {
        // Before each start: a remove killed after moving the data away, so every start has
        // repair work (today: purging .stowage/deleting) to crash in.
        const name = `half-removed${++n}`;
        await r.setup('Create', { Name: name, Opts: VOLUME_OPTS });
        await mkdir(join(r.store, name, 'sub'));
        for (let i = 0; i < 5; i += 1) await writeFile(join(r.store, name, 'sub', `file${i}`), `data ${i}\n`);
        await writeFile(join(r.store, name, 'marker'), 'old data\n');
        // unlink #2 of a Remove: its intent recorded, the data moved into .stowage/deleting, the
        // registry entry not yet unlinked (see kill-points.test.ts).
        const removal = await r.crashAt({ syscall: 'unlink', n: 2 }, () => r.call('Remove', { Name: name }), { restart: false });
        if (!removal?.killed) r.violate(`remove of ${name}`, 'every kill point is reached', 'the Remove never made its unlink #2: the steps changed');
        removed.push(name);
        const { killed, restarted } = await r.crashDuringStart({ syscall, n: k });
        alive = restarted;
        if (restarted) await r.checkStore(`start ${syscall}#${k}`);
        if (!killed) break;
      }
    }
    expect(alive).toBe(true);
    const listed = await listedNames(r.socket);
    await r.checkRecreate('after the sweep', 'half-created');
    for (const name of removed) {
      await r.checkRecreate('after the sweep', name, { file: 'marker', mustBe: listed.includes(name) ? 'present' : 'absent' });
    }
    await r.checkMountsReturnToZero('after the sweep');
    process.stderr.write(`\n[crash restart] kill points: ${r.visited.filter((p) => !p.startsWith('write')).join(', ')}\n` +
      r.report().map((line) => `  ${line}\n`).join(''));
    expect(r.report()).toEqual([]);
  });
});
