/**
 * The mount-count invariant against a real Docker engine: kill -9 of the daemon while `docker
 * run` mounts (or unmounts) a volume through it, a restart, and the mount records must come back
 * to exactly the mounts of the containers still running, once the reconciliation grace is over.
 * Docker never sends Unmount for a Mount whose answer it did not get, nor retries an Unmount that
 * failed, so only the engine can tell the daemon which records are stale.
 *
 * Docker's mount IDs are not visible through its API, so the reconciliation works per volume: a
 * record leaked on a volume that a running container also uses stays until no container uses it
 * (README, "Mounts and restarts"). So the kill points run on `ek`, which no container holds: there
 * every leak must go within the grace. The container "holder" keeps `ev` mounted throughout: its
 * record must never be dropped. A last point leaks a record on `ev` itself, which must go once
 * "holder" is gone: then nothing at all may stay counted.
 *
 * What Docker does with a Mount that was in flight when the plugin died: it calls the plugin
 * again once the socket is back, but with an EMPTY body, which the plugin refuses ("needs a
 * non-empty string field Name"), so that `docker run` exits 125. The summary line shows those
 * exit codes; nothing here asserts them, and the records left behind are checked either way.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_PATH, assertCliBuilt, runCli } from '../helpers/daemon-process.js';
import { startDockerNode, stopAll, type DockerNode } from '../helpers/docker-node.js';
import { checkDocker, systemSuite } from '../helpers/requirements.js';
import { startStowageInNode, type StowageInNode } from '../helpers/stowage-in-node.js';
import { checkCrashTools, describePoint, sleep, underKillPoint, type DaemonRun, type Exit, type KillPoint } from './crash-daemon.js';
import { persistedMounts } from './store-state.js';

const skip = systemSuite('strace', checkCrashTools()) || systemSuite('docker', checkDocker());

/**
 * Kill points in the daemon's handling of `docker run --rm -v VOL:/data IMAGE true`, each on a
 * path of its own (strace -P), since the node record is also published at moments of its own
 * (when the engine reports a container starting or stopping). Mount makes the node's marker of
 * the volume, attaches it, appends its mount record to `<root>/mounts.log` (a write on that
 * file) and answers (a reply on the plugin socket, which has no path to count on); Unmount
 * appends its record the same way. So write #1 on the log is "Mount done, not recorded", the
 * moment right after it "recorded, not answered", and write #2 on the log "Unmount done, not
 * recorded". (An Unmount recorded and not answered leaves the same records as one answered:
 * Docker never retries an Unmount.)
 */
function killPoints(root: string): KillPoint[] {
  const log = join(root, 'mounts.log');
  return [
    { syscall: 'write', n: 1, path: log },
    { syscall: 'write', n: 1, path: log, after: true },
    { syscall: 'write', n: 2, path: log },
  ];
}

/** Reconciliation flags, if this build has them: short, so the test does not wait a minute. */
async function graceFlags(): Promise<{ args: string[]; waitMs: number }> {
  const help = await runCli(['daemon', '--help']);
  const text = help.stdout + help.stderr;
  if (text.includes('--mount-grace') && text.includes('--reconcile-interval')) {
    return { args: ['--mount-grace', '2', '--reconcile-interval', '1'], waitMs: 8_000 };
  }
  return { args: [], waitMs: 3_000 };
}

/** PID of the node process running `stowage daemon --root ROOT`. */
async function daemonPid(root: string): Promise<number> {
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const argv = (await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')).split('\0');
    if (argv[1] === CLI_PATH && argv[2] === 'daemon' && argv.includes(root)) return Number(entry);
  }
  throw new Error(`no stowage daemon with --root ${root} is running`);
}

describe.skipIf(skip)('kill -9 while Docker mounts a volume, then restart', { timeout: 150_000 }, () => {
  let node: DockerNode;
  let stowage: StowageInNode;
  let root: string;
  let store: string;
  let args: string[];
  let waitMs: number;

  beforeAll(async () => {
    assertCliBuilt();
    ({ args, waitMs } = await graceFlags());
    node = await startDockerNode({ name: 'crash' });
    root = join(node.dir, 'stowage-root');
    store = join(node.dir, 'store');
    args = ['--opt', `vfs.path=${store}`, '--docker-host', node.dockerHost, '--node-id', 'crash-engine', ...args];
    stowage = await startStowageInNode(node, { root, args, env: { UV_THREADPOOL_SIZE: '1' } });
  });
  afterAll(async () => {
    await stopAll();
  });

  /** The mount IDs in the records, as `volume/id×count`. */
  const records = async () => (await persistedMounts(root)).ids.sort();

  /**
   * The running daemon as underKillPoint sees it. Its launcher keeps the exit status to itself,
   * so the end is seen in /proc; the daemon serves until killed, so an end here is a kill.
   */
  async function currentRun(): Promise<DaemonRun> {
    const pid = await daemonPid(root);
    let ended = false;
    const alive = () => readFile(`/proc/${pid}/stat`, 'utf8').then((stat) => !/^\d+ \(.*\) Z/.test(stat), () => false);
    const exited: Promise<Exit> = (async () => {
      while (await alive()) await sleep(20);
      ended = true;
      return { code: null, signal: 'SIGKILL' };
    })();
    return { pid, startedAt: Date.now(), exited, hasExited: () => ended, log: () => '' };
  }

  /**
   * `docker run --rm -v VOLUME:/data IMAGE true` with `point` armed, then kill -9 (if the point
   * did not do it) and a restart, while docker run is still retrying. Returns how it went.
   */
  async function runUnder(point: KillPoint, volume: string): Promise<{ killed: boolean; line: string }> {
    const run = await currentRun();
    let dockerRun: Promise<{ exitCode: number; stderr: string }> = Promise.resolve({ exitCode: 0, stderr: '' });
    // Docker keeps retrying a plugin it cannot reach; the daemon comes back while it does, as
    // a supervised daemon would, instead of after docker run gave up.
    const outcome = await underKillPoint(run, point, () => {
      dockerRun = node.docker(['run', '--rm', '--network', 'none', '-v', `${volume}:/data`, node.image, 'true'], { reject: false, timeoutMs: 90_000 });
      return Promise.race([dockerRun, run.exited]);
    });
    try { process.kill(run.pid, 'SIGKILL'); } catch { /* already dead */ }
    await run.exited;
    await stowage.stop('SIGKILL');
    stowage = await startStowageInNode(node, { root, args, env: { UV_THREADPOOL_SIZE: '1' }, logName: `stowage-${describePoint(point)}-${volume}` });
    const afterRestart = await records();
    const ran = await dockerRun;
    return {
      killed: outcome.killed,
      line: `${describePoint(point)} on ${volume}${outcome.killed ? '' : ' (not reached)'}: docker run exited ${ran.exitCode}` +
        `${ran.exitCode === 0 ? '' : ` (${ran.stderr.trim().slice(0, 400)})`}, records at the restart ${JSON.stringify(afterRestart)}`,
    };
  }

  /** Waits up to the grace for the records to be exactly `expected`; returns what they are then. */
  async function settle(expected: readonly string[]): Promise<string[]> {
    const exact = (ids: string[]) => ids.length === expected.length && expected.every((id) => ids.includes(id));
    const deadline = Date.now() + waitMs;
    let now = await records();
    while (!exact(now) && Date.now() < deadline) {
      await sleep(200);
      now = await records();
    }
    return now;
  }

  it('counts only the mounts of running containers once the grace is over', async () => {
    for (const volume of ['ev', 'ek']) {
      await node.docker(['volume', 'create', '-d', 'stowage', '-o', 'mode=750', '-o', 'uid=1000', '-o', 'gid=1000', volume]);
    }
    await node.docker(['run', '-d', '--name', 'holder', '--network', 'none', '-v', 'ev:/data', node.image, 'sleep', '600']);
    const held = await records();
    expect(held).toEqual([expect.stringMatching(/^ev\/[0-9a-f]+×1$/)]);
    const violations: string[] = [];
    const summary: string[] = [];
    const reported = new Set<string>();
    let killed = 0;
    for (const point of killPoints(root)) {
      const ran = await runUnder(point, 'ek');
      if (ran.killed) killed += 1;
      summary.push(ran.line);
      const now = await settle(held);
      // Leaks from earlier points are reported once, where they appeared.
      const leaked = now.filter((id) => !held.includes(id) && !reported.has(id));
      for (const id of leaked) reported.add(id);
      if (leaked.length > 0) {
        violations.push(`[${describePoint(point)}] mount counts return to the running containers' mounts: ` +
          `${JSON.stringify(leaked)} still counted ${waitMs} ms after the restart; only "holder" runs (${JSON.stringify(held)})`);
      }
      const lost = held.filter((id) => !now.includes(id));
      if (lost.length > 0) {
        violations.push(`[${describePoint(point)}] a mount of a running container stays counted: ${JSON.stringify(lost)} dropped`);
      }
    }
    // A Mount of ev recorded and never answered, while "holder" uses ev: the leak cannot be told
    // from holder's mount until holder is gone, but holder's record must survive meanwhile.
    const last: KillPoint = { syscall: 'write', n: 1, path: join(root, 'mounts.log'), after: true };
    const ran = await runUnder(last, 'ev');
    if (ran.killed) killed += 1;
    summary.push(ran.line);
    const withLeak = await settle(held);
    if (!held.every((id) => withLeak.includes(id))) {
      violations.push(`[${describePoint(last)} on ev] a mount of a running container stays counted: ${JSON.stringify(held)} dropped, left ${JSON.stringify(withLeak)}`);
    }
    await node.docker(['rm', '-f', 'holder']);
    const end = await settle([]);
    if (end.length > 0) violations.push(`[end] mount counts return to zero: ${JSON.stringify(end)} after the last container left`);
    process.stderr.write(`\n[crash engine] ${summary.join('; ')}\n  ${violations.length === 0 ? 'no invariant broke' : violations.join('\n  ')}\n`);
    // Every point must kill the daemon: otherwise the steps changed and the list must follow.
    expect(killed).toBe(killPoints(root).length + 1);
    expect(violations).toEqual([]);
  });
});
