/**
 * A private glusterd for tests: its own working, run and log directories under a temp dir, a
 * `gluster` runner pointed at its socket, volumes with bricks under the same temp dir, and a
 * cleanup that leaves no process, mount or directory behind.
 *
 * One at a time per machine: glusterd's own port can be changed, but the brick processes it
 * spawns fetch their volfile from port 24007 of the host regardless (`glusterfsd -s HOST` with
 * no port), so a glusterd elsewhere cannot start bricks. `startGlusterd` therefore takes a
 * machine-wide lock (waiting, bounded, for another test process to finish) and refuses to run
 * when something else (a system glusterd) already listens on 24007.
 *
 * ```ts
 * const skip = systemSuite('glusterfs', checkGluster());
 * describe.skipIf(skip)('...', () => {
 *   let gd: Glusterd;
 *   beforeAll(async () => { gd = await startGlusterd(); });
 *   afterAll(async () => { await gd?.stop(); });
 * });
 * ```
 *
 * glusterd runs in the foreground (`-N`) under `setpriv --pdeathsig`, so it dies with the test
 * process; the bricks, self-heal and quota daemons it forks do not, so the next `startGlusterd`
 * kills the processes of harness dirs whose owner died, by pid (found via their command lines,
 * which all name the harness dir).
 */
import { execa, type ResultPromise } from 'execa';
import { cp, mkdir, mkdtemp, readdir, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DIR_PREFIX, acquireLock, killProcessesOf, portOpen, reapOrphans, releaseLock, settlesWithin, unmountGlusterUnder,
} from './glusterd-housekeeping.js';

export interface CommandResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export interface GlusterVolumeSpec {
  /** Gluster volume name; letters, digits, '-' and '_'. */
  name: string;
  /** @default 1 */
  bricks?: number;
  replica?: number;
  /** @default true */
  start?: boolean;
}

export interface Glusterd {
  /** Harness directory: glusterd state, logs, bricks, and `tempDir`s. */
  readonly dir: string;
  /** glusterd's unix socket (what `--glusterd-sock` and stowage's `glusterfs.glusterdsocket` take). */
  readonly socket: string;
  /** This machine's host name, used in brick and mount sources (gluster refuses `localhost`). */
  readonly host: string;
  readonly logDir: string;
  /** Milliseconds from spawning glusterd until it answered the CLI. */
  readonly startMs: number;
  /** Runs `gluster --mode=script ARGS` against this glusterd; never throws for a non-zero exit. */
  gluster(args: readonly string[], timeoutMs?: number): Promise<CommandResult>;
  /** Runs `gluster --mode=script --xml ARGS`; throws unless `<opRet>` is 0. Returns the XML. */
  xml(args: readonly string[], timeoutMs?: number): Promise<string>;
  /** Creates (and by default starts) a volume with bricks under `dir/bricks`. Returns the brick paths. */
  createVolume(spec: GlusterVolumeSpec): Promise<string[]>;
  startVolume(name: string): Promise<void>;
  stopVolume(name: string): Promise<void>;
  /** SIGTERM glusterd and wait for it (bricks keep running, as on a real server whose glusterd died). */
  stopDaemon(): Promise<void>;
  /** Starts glusterd again on the same working directory; a no-op while it runs. */
  startDaemon(): Promise<void>;
  /** SIGSTOP / SIGCONT glusterd: it keeps its port but never answers (a hung server). */
  pause(): void;
  resume(): void;
  /** A fresh directory under `dir` (stowage roots, mount points): cleanup unmounts under it. */
  tempDir(prefix: string): Promise<string>;
  /** Stops everything this harness started and removes `dir`. Idempotent. */
  stop(): Promise<void>;
}

export const GLUSTERD_PORT = 24007;
const READY_MS = 20_000;
const CLI_TIMEOUT_MS = 30_000;
const FIXED_DIRS = ['/var/run/gluster', '/var/lib/glusterd'];
const DAEMON_OPTIONS = { reject: false, stdin: 'ignore', stdout: 'ignore', stderr: 'ignore' } as const;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function startGlusterd(opts: { baseDir?: string } = {}): Promise<Glusterd> {
  const base = opts.baseDir ?? tmpdir();
  await acquireLock();
  let harness: Harness | undefined;
  try {
    await reapOrphans(base);
    if (await portOpen(GLUSTERD_PORT)) {
      throw new Error(`port ${GLUSTERD_PORT} is already in use (a system glusterd?); the test glusterd needs it because ` +
        `brick processes always fetch their volfile there. Stop that glusterd first`);
    }
    const dir = await realpath(await mkdtemp(join(base, DIR_PREFIX)));
    harness = new Harness(dir);
    await harness.boot();
    return harness;
  } catch (error) {
    if (harness) await harness.stop().catch(() => undefined);
    else await releaseLock();
    throw error;
  }
}

class Harness implements Glusterd {
  readonly socket: string;
  readonly host = hostname();
  readonly logDir: string;
  startMs = 0;
  private daemon?: ResultPromise<typeof DAEMON_OPTIONS>;
  private readonly volumes = new Set<string>();
  private stopping?: Promise<void>;
  /** Entries of gluster's fixed directories before we started: anything new there is ours. */
  private readonly fixedBefore = new Map<string, Set<string>>();

  constructor(readonly dir: string) {
    this.socket = join(dir, 'run', 'glusterd.socket');
    this.logDir = join(dir, 'log');
  }

  async boot(): Promise<void> {
    await writeFile(join(this.dir, 'owner.json'), JSON.stringify({ pid: process.pid }));
    for (const fixed of FIXED_DIRS) this.fixedBefore.set(fixed, new Set(await readdir(fixed).catch(() => [] as string[])));
    for (const sub of ['work', 'run', 'log', 'bricks', 'tmp']) await mkdir(join(this.dir, sub), { recursive: true });
    // glusterd reads volume-option groups from its working dir; hooks are left out on purpose (they
    // would run scripts that touch /var/lib/glusterd).
    await cp('/var/lib/glusterd/groups', join(this.dir, 'work', 'groups'), { recursive: true }).catch(() => undefined);
    const vol = (await readFile('/etc/glusterfs/glusterd.vol', 'utf8')).replace(
      /^(\s*)option working-directory .*$/m,
      [`$1option working-directory ${this.dir}/work`, `$1option run-directory ${this.dir}/run`,
        `$1option logging-directory ${this.logDir}`, `$1option glusterd-sockfile ${this.socket}`].join('\n'),
    );
    if (!vol.includes(`${this.dir}/work`)) throw new Error('/etc/glusterfs/glusterd.vol has no working-directory option to replace');
    await writeFile(join(this.dir, 'glusterd.vol'), vol);
    await this.startDaemon();
  }

  async startDaemon(): Promise<void> {
    if (this.daemon && this.daemon.exitCode === null && this.daemon.signalCode === null) return;
    const t0 = Date.now();
    this.daemon = execa('setpriv', ['--pdeathsig', 'TERM', 'glusterd', '-N', '-f', join(this.dir, 'glusterd.vol'),
      '-p', join(this.dir, 'glusterd.pid'), '-l', join(this.logDir, 'glusterd.log')],
    DAEMON_OPTIONS);
    const daemon = this.daemon;
    const deadline = Date.now() + READY_MS;
    let last = '';
    while (Date.now() < deadline) {
      if (daemon.exitCode !== null) break;
      const probe = await this.gluster(['--xml', 'volume', 'list'], 5_000);
      if (/<opRet>0<\/opRet>/.test(probe.stdout)) {
        this.startMs = Date.now() - t0;
        return;
      }
      last = (probe.stdout + probe.stderr).trim();
      await sleep(100);
    }
    const log = await readFile(join(this.logDir, 'glusterd.log'), 'utf8').catch(() => '');
    throw new Error(`private glusterd did not answer within ${READY_MS} ms (last: ${last}); glusterd.log tail:\n` +
      log.split('\n').slice(-15).join('\n'));
  }

  async stopDaemon(): Promise<void> {
    const daemon = this.daemon;
    if (!daemon || daemon.exitCode !== null || daemon.signalCode !== null) return;
    this.resume();
    daemon.kill('SIGTERM');
    if (!(await settlesWithin(daemon, 10_000))) {
      daemon.kill('SIGKILL');
      await settlesWithin(daemon, 5_000);
    }
  }

  pause(): void {
    if (this.daemon?.pid !== undefined && this.daemon.exitCode === null) process.kill(this.daemon.pid, 'SIGSTOP');
  }

  resume(): void {
    if (this.daemon?.pid !== undefined && this.daemon.exitCode === null) process.kill(this.daemon.pid, 'SIGCONT');
  }

  async gluster(args: readonly string[], timeoutMs = CLI_TIMEOUT_MS): Promise<CommandResult> {
    const result = await execa('gluster', [`--glusterd-sock=${this.socket}`, `--log-file=${join(this.logDir, 'cli.log')}`,
      '--mode=script', `--timeout=${Math.max(1, Math.floor(timeoutMs / 1000) - 1)}`, ...args],
    { reject: false, timeout: timeoutMs, stdin: 'ignore' });
    return { stdout: String(result.stdout), stderr: String(result.stderr), exitCode: result.exitCode ?? -1 };
  }

  async xml(args: readonly string[], timeoutMs?: number): Promise<string> {
    const result = await this.gluster(['--xml', ...args], timeoutMs);
    if (!/<opRet>0<\/opRet>/.test(result.stdout)) {
      const why = /<opErrstr>([^<]*)<\/opErrstr>/.exec(result.stdout)?.[1] ?? (result.stdout + result.stderr).trim();
      throw new Error(`gluster ${args.join(' ')} failed: ${why}`);
    }
    return result.stdout;
  }

  async createVolume(spec: GlusterVolumeSpec): Promise<string[]> {
    const count = spec.bricks ?? 1;
    const bricks = Array.from({ length: count }, (_, i) => join(this.dir, 'bricks', `${spec.name}-${i}`));
    const layout = spec.replica ? ['replica', String(spec.replica)] : [];
    this.volumes.add(spec.name);
    await this.xml(['volume', 'create', spec.name, ...layout, ...bricks.map((b) => `${this.host}:${b}`), 'force']);
    if (spec.start ?? true) await this.startVolume(spec.name);
    return bricks;
  }

  /** Starts the volume and waits until glusterd reports every brick online (bricks start slowly on a loaded machine). */
  async startVolume(name: string): Promise<void> {
    await this.xml(['volume', 'start', name]);
    const deadline = Date.now() + 30_000;
    for (;;) {
      const status = await this.xml(['volume', 'status', name]).catch(() => '');
      const bricks = [...status.matchAll(/<node>([\s\S]*?)<\/node>/g)].map((m) => m[1]!)
        .filter((node) => /<path>\//.test(node));
      if (bricks.length > 0 && bricks.every((node) => /<status>1<\/status>/.test(node))) return;
      if (Date.now() > deadline) throw new Error(`gluster volume ${name}: bricks not all online 30 s after start:\n${status}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  async stopVolume(name: string): Promise<void> {
    await this.xml(['volume', 'stop', name]);
  }

  async tempDir(prefix: string): Promise<string> {
    return mkdtemp(join(this.dir, 'tmp', prefix));
  }

  stop(): Promise<void> {
    this.stopping ??= this.teardown();
    return this.stopping;
  }

  private async teardown(): Promise<void> {
    const problems: string[] = [];
    try {
      await unmountGlusterUnder(this.dir, this.volumes).catch((e: unknown) => problems.push(`unmounting: ${String(e)}`));
      await this.stopDaemon().catch((e: unknown) => problems.push(`stopping glusterd: ${String(e)}`));
      await killProcessesOf(this.dir).catch((e: unknown) => problems.push(`killing processes: ${String(e)}`));
      const left = await unmountGlusterUnder(this.dir, this.volumes);
      if (left.length > 0) problems.push(`still mounted, so ${this.dir} was kept: ${left.join(', ')}`);
      else if (process.env.STOWAGE_TEST_KEEP_GLUSTER !== '1') await rm(this.dir, { recursive: true, force: true, maxRetries: 3 });
      // glusterd, bricks and quotad leave sockets, pid files and dirs in fixed paths; while we hold
      // the lock and port 24007, whatever appeared there is ours.
      if (left.length === 0) {
        for (const [fixed, before] of this.fixedBefore) {
          for (const entry of await readdir(fixed).catch(() => [] as string[])) {
            if (!before.has(entry)) await rm(join(fixed, entry), { recursive: true, force: true }).catch(() => undefined);
          }
        }
      }
    } finally {
      await releaseLock();
    }
    if (problems.length > 0) process.stderr.write(`[stowage tests] glusterd harness cleanup: ${problems.join('; ')}\n`);
  }
}
