/**
 * One vfs store and state root that a daemon is killed and restarted on, plus the invariants the
 * crash suite checks after every restart. Violations are collected, not thrown, so one run
 * reports every invariant that broke at every kill point.
 */
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTempDir, removeTempDir, runCli } from '../helpers/daemon-process.js';
import { listedNames, pluginCall } from '../helpers/plugin-client.js';
import {
  describePoint, killHard, sleep, startCrashDaemon, underKillPoint, type DaemonRun, type KillPoint, type Outcome,
} from './crash-daemon.js';
import { entriesOf, findTempFiles, persistedMounts, storeEntries } from './store-state.js';
import { FLUSH_DELAY_MS } from '../../src/core/flusher.js';

/** What every volume of the suite is created with: the data directory must come out this way. */
export const VOLUME_OPTS = { mode: '750', uid: '1000', gid: '1000' } as const;
const EXPECTED = { mode: 0o750, uid: 1000, gid: 1000 };
/** How long a start that began to serve is watched for a kill point in its background work. */
const AFTER_START_MS = 400;
/** How long background work after a restart (purges, reconciliation) may take to settle. */
const SETTLE_MS = Number(process.env.STOWAGE_CRASH_SETTLE_MS ?? 1_000);

export interface Violation {
  point: string;
  invariant: string;
  detail: string;
}

export class CrashRig {
  readonly violations: Violation[] = [];
  /** Kill points visited, with whether the daemon died there. */
  readonly visited: string[] = [];
  /** Mount IDs whose Mount answered with a mountpoint: Docker will send Unmount for exactly these. */
  readonly believedMounted = new Map<string, string>();
  /** Mount IDs a running container holds across the crashes: they must keep pinning their volume. */
  readonly held = new Map<string, string>();
  /** Leaked mount records that `stowage release VOLUME ID` cleared, as `volume/id`. */
  readonly released: string[] = [];
  run!: DaemonRun;
  private probes = 0;
  private readonly seen = new Set<string>();

  private constructor(
    readonly dir: string, readonly store: string, readonly root: string, readonly socket: string,
    private readonly pidNamespace: boolean,
  ) {}

  /** `pidNamespace`: every run of the daemon is PID 1 of a new PID namespace, as in a container. */
  static async create(label: string, options: { pidNamespace?: boolean } = {}): Promise<CrashRig> {
    const dir = await makeTempDir(`stowage-crash-${label}-`);
    return new CrashRig(dir, join(dir, 'store'), join(dir, 'root'), join(dir, 'sock'), options.pidNamespace ?? false);
  }

  /**
   * No engine: nothing but Docker's own Unmounts (and `stowage release`) drops a mount record.
   * The heartbeat (a node record rewritten every 5 s by default) is pushed out of the way: it
   * would add renames at random moments, and the kill points count renames. Requests still
   * publish the node record whenever they change what it says.
   */
  get args(): string[] {
    return [
      '--root', this.root, '--opt', `vfs.path=${this.store}`, '--docker-host', 'none', '--node-id', 'crash-node',
      '--heartbeat-interval', '3600', '--stale-after', '7200',
    ];
  }

  async start(): Promise<void> {
    this.run = await startCrashDaemon({ socket: this.socket, args: this.args, pidNamespace: this.pidNamespace });
  }

  async dispose(): Promise<void> {
    if (this.run) await killHard(this.run);
    await removeTempDir(this.dir);
  }

  /** Records a violation once: what a crash broke stays broken, and later points would repeat it. */
  violate(point: string, invariant: string, detail: string, message = detail): void {
    const key = `${invariant}|${detail}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    this.violations.push({ point, invariant, detail: message });
  }

  /** The violations as lines, for an assertion whose failure message lists them all. */
  report(): string[] {
    return this.violations.map((v) => `[${v.point}] ${v.invariant}: ${v.detail}`);
  }

  call(method: string, body: unknown) {
    return pluginCall(this.socket, method, body);
  }

  /** A plugin call that must answer without Err; a failure is recorded as a violation. */
  async expectOk(point: string, invariant: string, method: string, body: unknown): Promise<Record<string, unknown> | undefined> {
    const reply = await this.call(method, body).catch((err: unknown) => ({ Err: `no answer: ${(err as Error).message}` }));
    if (reply.Err) {
      this.violate(point, invariant, `${method} ${JSON.stringify(body)} answered Err ${JSON.stringify(reply.Err)}`);
      return undefined;
    }
    return reply;
  }

  /** A call the scenario itself needs on a healthy daemon; its failure ends the test. */
  async setup(method: string, body: unknown): Promise<Record<string, unknown>> {
    const reply = await this.call(method, body);
    if (reply.Err) throw new Error(`setting up the scenario: ${method} ${JSON.stringify(body)} answered Err ${JSON.stringify(reply.Err)}`);
    // Its group flush (FLUSH_DELAY_MS after the answer) lands now, not inside the request under test.
    await sleep(FLUSH_DELAY_MS + 150);
    return reply;
  }

  /**
   * Sends `request` with `point` armed, then makes sure the daemon has crashed (a point the
   * request never reached becomes a crash right after it) and, unless told not to, starts it
   * again. Returns undefined when the daemon could not be started again, which ends the sweep.
   */
  async crashAt<T>(point: KillPoint, request: () => Promise<T>, options: { restart?: boolean } = {}): Promise<Outcome<T> | undefined> {
    const outcome = await underKillPoint(this.run, point, request);
    this.visited.push(`${describePoint(point)}${outcome.killed ? '' : ' (not reached)'}`);
    await killHard(this.run);
    if (options.restart === false) return outcome;
    try {
      await this.start();
    } catch (err) {
      this.violate(describePoint(point), 'daemon restarts after kill -9', (err as Error).message.slice(0, 600));
      return undefined;
    }
    return outcome;
  }

  /**
   * Starts the daemon with `point` armed from its first instruction, then (killed there or not,
   * before or shortly after it began to serve) starts it again normally. `restarted` is false
   * when that failed (recorded as a violation), which ends the sweep.
   */
  async crashDuringStart(point: KillPoint): Promise<{ killed: boolean; restarted: boolean }> {
    const label = describePoint(point);
    await killHard(this.run);
    let killed: boolean;
    try {
      const armed = await startCrashDaemon({ socket: this.socket, args: this.args, killPoint: point });
      // Work a start leaves to the background (purges) may meet the point a moment later.
      killed = await Promise.race([armed.exited.then(() => true), sleep(AFTER_START_MS).then(() => false)]);
      await killHard(armed);
    } catch (err) {
      killed = /signal SIGKILL/.test((err as Error).message);
      if (!killed) this.violate(label, 'the daemon starts', (err as Error).message.slice(0, 600));
    }
    this.visited.push(`${label}${killed ? '' : ' (not reached)'}`);
    try {
      await this.start();
    } catch (err) {
      this.violate(label, 'daemon restarts after kill -9 during start-up', (err as Error).message.slice(0, 600));
      return { killed, restarted: false };
    }
    return { killed, restarted: true };
  }

  /**
   * The invariants that hold at any time once the restarted daemon serves: listed volumes have
   * their data, data belongs to listed volumes, no temporary files or deleted data outlive a crash.
   */
  async checkStore(point: string): Promise<void> {
    const listed = new Set(await listedNames(this.socket));
    for (const name of listed) {
      const stat = await lstat(join(this.store, name)).catch(() => undefined);
      if (!stat?.isDirectory()) this.violate(point, 'registry and data agree', `volume ${name} is listed but ${join(this.store, name)} is not a directory`);
    }
    for (const entry of await storeEntries(this.store)) {
      if (listed.has(entry.name)) continue;
      // An empty directory is harmless if the next create of that name takes it over; the
      // sweeps check that take-over for the names they use.
      if (entry.kind === 'directory' && entry.contents.length === 0) continue;
      this.violate(point, 'registry and data agree',
        `${join(this.store, entry.name)} (${entry.kind}, holding ${JSON.stringify(entry.contents)}) belongs to no listed volume`);
    }
    // Background clean-up after a start may take a moment; what an earlier point already
    // reported is not waited for again.
    const deadline = Date.now() + SETTLE_MS;
    const tempKey = (path: string) => `no temporary files accumulate|${path}`;
    let temps = await this.staleTemps();
    let deleting = await entriesOf(join(this.store, '.stowage', 'deleting'));
    while ((temps.some((t) => !this.seen.has(tempKey(t.path))) || deleting.length > 0) && Date.now() < deadline) {
      await sleep(100);
      temps = await this.staleTemps();
      deleting = await entriesOf(join(this.store, '.stowage', 'deleting'));
    }
    for (const temp of temps) {
      this.violate(point, 'no temporary files accumulate', temp.path,
        `${temp.path} (${temp.size} bytes) was left by a killed daemon and is still there after the restart`);
    }
    if (deleting.length > 0) {
      this.violate(point, 'removed data is purged', `.stowage/deleting still holds ${JSON.stringify(deleting)} ${SETTLE_MS} ms after the restart`);
    }
  }

  private async staleTemps() {
    const all = [
      ...await findTempFiles(join(this.store, '.stowage'), true),
      ...await findTempFiles(this.root),
    ];
    // The kill came before this run was started; a file the new daemon is writing is newer.
    return all.filter((temp) => temp.mtimeMs < this.run.startedAt);
  }

  /**
   * Creates `name` as the suite always does and checks it is fully usable: Create answers, Mount
   * returns an existing directory with the requested mode and owner. `markerMustBe` says whether
   * `marker` must be inside (the volume's old data) or absent (a removed volume's data).
   */
  async checkRecreate(point: string, name: string, marker?: { file: string; mustBe: 'present' | 'absent' }): Promise<void> {
    const created = await this.expectOk(point, 'create after a crash succeeds', 'Create', { Name: name, Opts: VOLUME_OPTS });
    if (!created) return;
    const id = `probe${++this.probes}`;
    const mounted = await this.expectOk(point, 'mount after a crash gives the requested directory', 'Mount', { Name: name, ID: id });
    if (!mounted) return;
    const path = String(mounted.Mountpoint);
    const stat = await lstat(path).catch(() => undefined);
    if (!stat?.isDirectory()) {
      this.violate(point, 'mount after a crash gives the requested directory', `Mount of ${name} returned ${path}, which is not a directory`);
    } else {
      const got = { mode: stat.mode & 0o7777, uid: stat.uid, gid: stat.gid };
      if (got.mode !== EXPECTED.mode || got.uid !== EXPECTED.uid || got.gid !== EXPECTED.gid) {
        this.violate(point, 'create applies mode/uid/gid even across a crash',
          `${path} has mode ${got.mode.toString(8)} uid ${got.uid} gid ${got.gid}, expected 750 1000 1000`);
      }
      if (marker) {
        const present = (await readdir(path).catch(() => [] as string[])).includes(marker.file);
        if (marker.mustBe === 'absent' && present) {
          this.violate(point, "a removed volume's data never reappears", `${name} was re-created and still holds ${marker.file}`);
        }
        if (marker.mustBe === 'present' && !present) {
          this.violate(point, 'a volume that was not removed keeps its data', `${name} is still listed but lost ${marker.file}`);
        }
      }
    }
    await this.expectOk(point, 'unmount succeeds', 'Unmount', { Name: name, ID: id });
  }

  /**
   * Docker unmounts every ID it believes mounted (`replay`: also IDs whose Unmount got no answer
   * before the crash, as Docker may send Unmount again after a plugin restart); then the mount
   * records must come back to zero within the settle time.
   *
   * `unanswered`: mount IDs whose Mount got no answer (the daemon died first). Docker never
   * unmounts those. Killed after saving the record and before replying, such a Mount leaves a
   * count, and without an engine (`--docker-host none`, as here) nothing can tell it from a held
   * mount: dropping it at restart could make a volume in use look free, and a Remove would then
   * delete data under a running container. The documented way out is `stowage release VOLUME
   * [ID]`, so for these IDs the invariant is that the release clears them and nothing else: other
   * records, the volume and its data stay. Any other count left is a leak.
   */
  async checkMountsReturnToZero(
    point: string, replay: ReadonlyMap<string, string> = new Map(), unanswered: ReadonlyMap<string, string> = new Map(),
  ): Promise<void> {
    for (const [id, volume] of [...this.believedMounted, ...replay]) {
      await this.expectOk(point, 'unmount succeeds', 'Unmount', { Name: volume, ID: id });
      this.believedMounted.delete(id);
    }
    const leakKey = (id: string) => `mount counts return to zero once Docker unmounted everything|${id}`;
    const deadline = Date.now() + SETTLE_MS;
    let leaked = await this.leakedMounts();
    while (leaked.some((id) => !this.seen.has(leakKey(id)) && !this.releasable(id, unanswered)) && Date.now() < deadline) {
      await sleep(100);
      leaked = await this.leakedMounts();
    }
    for (const entry of leaked.filter((id) => this.releasable(id, unanswered))) {
      const at = entry.lastIndexOf('×');
      const [volume, id] = [entry.slice(0, entry.indexOf('/')), entry.slice(entry.indexOf('/') + 1, at)];
      const before = (await persistedMounts(this.root)).ids.filter((e) => e !== entry);
      const result = await runCli(['release', volume, id, '--socket', this.socket]);
      const after = (await persistedMounts(this.root)).ids;
      if (result.exitCode !== 0) {
        this.violate(point, 'stowage release clears a mount count Docker never got the answer for',
          `stowage release ${volume} ${id} exited ${result.exitCode}: ${(result.stderr || result.stdout).trim().slice(0, 300)}`);
        continue;
      }
      if (after.includes(entry)) {
        this.violate(point, 'stowage release clears a mount count Docker never got the answer for',
          `${entry} is still in ${join(this.root, 'mounts.json (+ mounts.log)')} after stowage release ${volume} ${id}`);
        continue;
      }
      const lost = before.filter((e) => !after.includes(e));
      if (lost.length > 0) {
        this.violate(point, 'stowage release drops only what it was asked to',
          `stowage release ${volume} ${id} also dropped ${JSON.stringify(lost)}`);
      }
      if (!(await listedNames(this.socket)).includes(volume)) {
        this.violate(point, 'stowage release drops only what it was asked to', `${volume} is no longer listed after stowage release ${volume} ${id}`);
      }
      this.released.push(`${volume}/${id}`);
    }
    leaked = leaked.filter((id) => !this.releasable(id, unanswered));
    for (const id of leaked) {
      this.violate(point, 'mount counts return to zero once Docker unmounted everything', id,
        `${join(this.root, 'mounts.json (+ mounts.log)')} still counts ${id} ${SETTLE_MS} ms after Docker's last Unmount`);
    }
    const records = (await persistedMounts(this.root)).ids;
    for (const [id, volume] of this.held) {
      if (!records.some((entry) => entry.startsWith(`${volume}/${id}×`))) {
        this.violate(point, 'a mount Docker still holds survives the crash', `${volume}/${id} is no longer in ${join(this.root, 'mounts.json (+ mounts.log)')}`);
      }
    }
    // Other nodes see this node's mounts only through its markers (cluster layout 2).
    const counted = new Set(records.map((entry) => entry.slice(0, entry.indexOf('/'))));
    const markers = new Set(await readdir(this.markerDir).catch(() => [] as string[]));
    for (const volume of counted) {
      if (!markers.has(volume)) this.violate(point, 'a mounted volume has its mount marker', `${volume} is counted but ${join(this.markerDir, volume)} is missing`);
    }
    for (const volume of markers) {
      if (!counted.has(volume)) this.violate(point, 'a volume with no mount left has no mount marker', `${join(this.markerDir, volume)} is left with no mount counted`);
    }
  }

  /** This node's mount markers in the store (see CLUSTER_LAYOUT). */
  private get markerDir(): string {
    return join(this.store, '.stowage', 'cluster', 'mounts', 'crash-node');
  }

  /** Whether a counted `volume/id×count` is the record of a Mount that got no answer. */
  private releasable(entry: string, unanswered: ReadonlyMap<string, string>): boolean {
    const key = entry.slice(0, entry.lastIndexOf('×'));
    return [...unanswered].some(([id, volume]) => key === `${volume}/${id}`);
  }

  /** Counted mounts other than the held ones, as `volume/id×count`. */
  private async leakedMounts(): Promise<string[]> {
    const held = new Set([...this.held].map(([id, volume]) => `${volume}/${id}`));
    return (await persistedMounts(this.root)).ids.filter((entry) => !held.has(entry.slice(0, entry.lastIndexOf('×'))));
  }
}
