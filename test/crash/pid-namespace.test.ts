/**
 * A daemon in a container is PID 1 of its PID namespace, and so is the daemon that replaces it
 * after kill -9: whatever protects the state root from a second daemon must not take the new
 * daemon for the old one.
 */
import { readFile } from 'node:fs/promises';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { assertCliBuilt } from '../helpers/daemon-process.js';
import { listedNames } from '../helpers/plugin-client.js';
import { systemSuite } from '../helpers/requirements.js';
import { checkCrashTools, killHard, startCrashDaemon } from './crash-daemon.js';
import { CrashRig, VOLUME_OPTS } from './crash-rig.js';

const skip = systemSuite('strace', checkCrashTools());

/** The daemon's PID as seen inside its own PID namespace (the last NSpid field). */
async function pidInsideNamespace(hostPid: number): Promise<number> {
  const status = await readFile(`/proc/${hostPid}/status`, 'utf8');
  const fields = /^NSpid:\s*(.+)$/m.exec(status)?.[1]?.trim().split(/\s+/) ?? [];
  return Number(fields[fields.length - 1]);
}

describe.skipIf(skip)('kill -9 of a daemon that is PID 1 of a PID namespace', { timeout: 60_000 }, () => {
  let rig: CrashRig | undefined;

  beforeAll(() => assertCliBuilt());
  afterEach(async () => {
    await rig?.dispose();
    rig = undefined;
  });

  it('starts again on the same state root, every time, and still knows its volumes and mounts', async () => {
    rig = await CrashRig.create('pidns', { pidNamespace: true });
    await rig.start();
    expect(await pidInsideNamespace(rig.run.pid)).toBe(1);
    await rig.setup('Create', { Name: 'in-container', Opts: VOLUME_OPTS });
    await rig.setup('Mount', { Name: 'in-container', ID: 'held' });
    for (let round = 1; round <= 3; round += 1) {
      await killHard(rig.run);
      const restarted = await startCrashDaemon({ socket: rig.socket, args: rig.args, pidNamespace: true })
        .then((run) => ({ run }), (err: unknown) => ({ error: (err as Error).message }));
      expect(restarted, `restart ${round} after kill -9`).not.toHaveProperty('error');
      if (!('run' in restarted)) return;
      rig.run = restarted.run;
      expect(await pidInsideNamespace(rig.run.pid)).toBe(1);
      expect(await listedNames(rig.socket)).toEqual(['in-container']);
      // The mount from before the crashes still pins the volume.
      const removal = await rig.call('Remove', { Name: 'in-container' });
      expect(String(removal.Err ?? '')).toMatch(/mounted/);
    }
    // Surviving PID reuse must not open the root to a second live daemon, itself PID 1 elsewhere.
    const second = await startCrashDaemon({ socket: `${rig.socket}2`, args: rig.args, pidNamespace: true })
      .then(async (run) => { await killHard(run); return 'started'; }, (err: unknown) => (err as Error).message);
    expect(second).toMatch(/state root/);
    expect(await listedNames(rig.socket)).toEqual(['in-container']);
    await rig.setup('Unmount', { Name: 'in-container', ID: 'held' });
    expect((await rig.call('Remove', { Name: 'in-container' })).Err ?? '').toBe('');
  });
});
