/**
 * A stowage daemon that the crash suite kills with SIGKILL at a chosen system call and starts
 * again on the same state root and store.
 *
 * Kill points come from strace's fault injection, attached to the running daemon right before a
 * request, so `when=N` counts calls made for that request only. strace counts per syscall and per
 * thread, so the daemon runs with one libuv worker thread (UV_THREADPOOL_SIZE=1): every
 * filesystem call then happens on that one thread, in program order, and the Nth call is the
 * same step on every run. That worker writes to libuv's eventfd after each finished filesystem
 * call, so `write` when=N kills the daemon right after its Nth filesystem step (or before a data
 * write): one sweep over `write` visits every point between two steps of an operation, most of
 * them many times over (a read or a stat changes nothing on disk), at one restart each. The
 * suites name the call that changes the disk next instead (`DURABLE_CALLS`, e.g. `rename` #2):
 * one point before each visits every state a crash can leave, and `traceDurableCalls` checks
 * that the list of points still matches what the daemon does.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdir, readFile, rm } from 'node:fs/promises';
import { CLI_PATH, canConnect, cleanEnv } from '../helpers/daemon-process.js';
import { pluginCall } from '../helpers/plugin-client.js';
import { findExecutable, type ComponentCheck } from '../helpers/requirements.js';

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** strace for the kill points, util-linux's unshare for the PID namespace, and root for both. */
export function checkCrashTools(): ComponentCheck {
  const missing = ['strace', 'unshare'].filter((tool) => findExecutable(tool) === undefined);
  if (missing.length > 0) return { ok: false, why: `missing ${missing.join(', ')} (apt-get install -y strace util-linux)` };
  if (process.getuid?.() !== 0) {
    return { ok: false, why: 'not running as root (strace attaches to the daemon, unshare makes a PID namespace)' };
  }
  return { ok: true };
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface CrashDaemonOptions {
  socket: string;
  /** Everything after `stowage daemon --socket SOCKET`. */
  args: readonly string[];
  /** Run the daemon as PID 1 of a new PID namespace (and a mount namespace for its /proc). */
  pidNamespace?: boolean;
  /** Arm a kill point from the first instruction on, for crashes during start-up. */
  killPoint?: KillPoint;
}

/** One run of the daemon process. */
export interface DaemonRun {
  /** PID of the node process on the host (inside a PID namespace it is 1 there). */
  pid: number;
  /** Wall-clock time just before the process was started. */
  startedAt: number;
  exited: Promise<Exit>;
  hasExited(): boolean;
  log(): string;
}

const START_TIMEOUT_MS = 15_000;

async function childrenOf(pid: number): Promise<number[]> {
  const tasks = await readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  const children: number[] = [];
  for (const task of tasks) {
    const text = await readFile(`/proc/${pid}/task/${task}/children`, 'utf8').catch(() => '');
    children.push(...text.split(/\s+/).filter((s) => s !== '').map(Number));
  }
  return children;
}

/**
 * The process below `pid` (its launchers fork, then exec) that runs `argv`, or -1 while there is
 * none yet. Matched by command line, not by position: strace forks short-lived children of its
 * own while it starts (to probe what ptrace supports), and taking the first child for the daemon
 * once sent the final SIGKILL to one of those, leaving the real daemon and its strace running and
 * the test waiting for them to end.
 */
async function daemonBelow(pid: number, argv: readonly string[]): Promise<number> {
  const expected = argv.join('\0');
  const queue = [pid];
  for (let current = queue.shift(); current !== undefined; current = queue.shift()) {
    for (const child of await childrenOf(current)) {
      const cmdline = await readFile(`/proc/${child}/cmdline`, 'utf8').catch(() => '');
      if (cmdline.replace(/\0$/, '') === expected) return child;
      queue.push(child);
    }
  }
  return -1;
}

/** `output`: where strace writes its trace, which a point `after` a call is watched through. */
function straceArgs(point: KillPoint, output = '/dev/null'): string[] {
  return [
    '-f', '-qq', '-o', output,
    '-e', `trace=${point.syscall}`,
    // A minute held in the call's return: far longer than the test takes to kill the daemon.
    '-e', `inject=${point.syscall}:${point.after ? 'delay_exit=60000000' : 'signal=KILL'}:when=${point.n}`,
    ...(point.path ? ['-P', point.path] : []),
  ];
}

/** Kills the daemon once strace reports the held call returned (it prints the line, then holds it). */
function killAfterHeldCall(run: DaemonRun, output: string): { stop: () => void } {
  let stopped = false;
  void (async () => {
    while (!stopped) {
      if ((await readFile(output, 'utf8').catch(() => '')).includes('(DELAYED)')) {
        try { process.kill(run.pid, 'SIGKILL'); } catch { /* gone already */ }
        return;
      }
      await sleep(5);
    }
  })();
  return { stop: () => { stopped = true; } };
}

/**
 * Starts the daemon and resolves once it answers List, i.e. serves requests. Rejects with the
 * daemon's log when it exits first or is not up in time.
 */
export async function startCrashDaemon(options: CrashDaemonOptions): Promise<DaemonRun> {
  if (options.killPoint?.after) throw new Error('a kill point after a call is for requests to a running daemon (underKillPoint)');
  const daemonArgv = [CLI_PATH, 'daemon', '--socket', options.socket, ...options.args];
  const wrapper = [
    ...(options.killPoint ? ['strace', ...straceArgs(options.killPoint)] : []),
    ...(options.pidNamespace ? ['unshare', '--pid', '--fork', '--kill-child', '--mount-proc'] : []),
  ];
  const [command, ...argv] = [...wrapper, process.execPath, ...daemonArgv] as [string, ...string[]];
  const startedAt = Date.now();
  const child: ChildProcess = spawn(command, argv, {
    env: cleanEnv({ UV_THREADPOOL_SIZE: '1' }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout?.on('data', (chunk: Buffer) => { log += chunk.toString('utf8'); });
  child.stderr?.on('data', (chunk: Buffer) => { log += chunk.toString('utf8'); });
  let ended = false;
  const exited = new Promise<Exit>((resolve) => {
    child.once('exit', (code, signal) => { ended = true; resolve({ code, signal }); });
    child.once('error', (err) => { ended = true; log += String(err); resolve({ code: null, signal: null }); });
  });
  const fail = async (why: string): Promise<never> => {
    if (!ended) child.kill('SIGKILL');
    const exit = await exited;
    throw new Error(`${why} (exit code ${exit.code}, signal ${exit.signal}):\n${log}`);
  };
  const deadline = startedAt + START_TIMEOUT_MS;
  let pid = wrapper.length > 0 ? -1 : child.pid ?? -1;
  for (;;) {
    if (ended) return fail(`stowage daemon exited before serving on ${options.socket}`);
    if (Date.now() > deadline) return fail(`stowage daemon did not serve on ${options.socket} in time`);
    if (pid < 0 && child.pid !== undefined) pid = await daemonBelow(child.pid, [process.execPath, ...daemonArgv]);
    if (pid > 0 && await canConnect(options.socket)) {
      const served = await pluginCall(options.socket, 'List', {}).then((reply) => !reply.Err, () => false);
      if (served) break;
    }
    await sleep(25);
  }
  return { pid, startedAt, exited, hasExited: () => ended, log: () => log };
}

/** SIGKILL to the daemon itself (not a launcher), then waits until its run has ended. */
export async function killHard(run: DaemonRun): Promise<void> {
  if (!run.hasExited()) {
    try { process.kill(run.pid, 'SIGKILL'); } catch { /* already gone */ }
  }
  await run.exited;
}

async function tracedBy(pid: number, tracer: number): Promise<boolean> {
  const tasks = await readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  if (tasks.length === 0) return false;
  for (const task of tasks) {
    const status = await readFile(`/proc/${pid}/task/${task}/status`, 'utf8').catch(() => '');
    if (!new RegExp(`^TracerPid:\\s*${tracer}$`, 'm').test(status)) return false;
  }
  return true;
}

export interface KillPoint {
  syscall: string;
  /** 1-based: the daemon dies on entering its Nth such call after the tracer attached. */
  n: number;
  /** Count only calls on this path (strace -P: a path argument or a descriptor open on it). */
  path?: string;
  /**
   * The daemon dies right after that call returned instead (its effect made, nothing after it
   * done): strace holds the call's return (delay_exit) and the test kills the daemon meanwhile.
   * For a step whose next durable call has no path of its own to count on (a reply on a socket).
   */
  after?: boolean;
}

export const describePoint = (p: KillPoint) => `${p.after ? 'after ' : ''}${p.syscall}#${p.n}${p.path ? ` on ${p.path.split('/').pop()}` : ''}`;

export interface Outcome<T> {
  /** The daemon died of the injected SIGKILL (before or after the request answered). */
  killed: boolean;
  /** What the request returned, when it did. */
  value?: T;
  error?: Error;
}

/** Time a finished request leaves for a kill point in work the daemon does after answering. */
const AFTER_REPLY_MS = 400;

/** Starts strace on the running daemon with `args` and waits until it traces every thread. */
async function attachStrace(run: DaemonRun, args: readonly string[]): Promise<{ tracer: ChildProcess; tracerExited: Promise<void> }> {
  const tracer = spawn('strace', ['-p', String(run.pid), ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let tracerLog = '';
  tracer.stderr?.on('data', (chunk: Buffer) => { tracerLog += chunk.toString('utf8'); });
  const tracerExited = new Promise<void>((resolve) => tracer.once('exit', () => resolve()));
  const deadline = Date.now() + 10_000;
  while (!(await tracedBy(run.pid, tracer.pid ?? -1))) {
    if (tracer.exitCode !== null || Date.now() > deadline) {
      tracer.kill('SIGKILL');
      throw new Error(`strace could not attach to the daemon (pid ${run.pid}): ${tracerLog}`);
    }
    await sleep(10);
  }
  return { tracer, tracerExited };
}

/**
 * Runs `request` against `run` with a kill point armed. If the point is never reached, strace is
 * detached and the daemon keeps running.
 */
export async function underKillPoint<T>(run: DaemonRun, point: KillPoint, request: () => Promise<T>): Promise<Outcome<T>> {
  const output = point.after ? `/tmp/stowage-crash-held-${run.pid}-${Date.now()}` : undefined;
  const { tracer, tracerExited } = await attachStrace(run, straceArgs(point, output));
  const killer = output ? killAfterHeldCall(run, output) : undefined;
  const result = await request().then((value) => ({ value }), (error: unknown) => ({ error: error as Error }));
  const killed = await Promise.race([run.exited.then(() => true), sleep(AFTER_REPLY_MS).then(() => false)]);
  killer?.stop();
  if (!killed) tracer.kill('SIGINT'); // detaches and leaves the daemon running
  await Promise.race([tracerExited, sleep(5_000).then(() => tracer.kill('SIGKILL'))]);
  if (output) await rm(output, { force: true });
  const exit = killed ? await run.exited : undefined;
  if (exit && exit.signal !== 'SIGKILL') {
    throw new Error(`the daemon ended with code ${exit.code}, signal ${exit.signal}, not the injected SIGKILL:\n${run.log()}`);
  }
  return { killed, ...result };
}

/**
 * The calls that change the disk (or, `writev`, send the reply): a kill point names one of them,
 * since a kill anywhere between two of them leaves the disk as a kill right before the next.
 * Creating a file (openat) is left out: the temp files it makes are written before any of these
 * touch them, and the points before their link or rename leave them behind already.
 */
export const DURABLE_CALLS = [
  'mkdir', 'mkdirat', 'rmdir', 'link', 'linkat', 'symlink', 'symlinkat', 'rename', 'renameat', 'renameat2',
  'unlink', 'unlinkat', 'chown', 'fchown', 'lchown', 'fchownat', 'chmod', 'fchmod', 'fchmodat',
  'fsync', 'fdatasync', 'truncate', 'ftruncate', 'writev',
  // A write at an offset: a file written over in place (the registry's epoch).
  'pwrite64',
] as const;

/**
 * Runs `request` against `run` under strace without injecting anything, and returns the names of
 * the `DURABLE_CALLS` the daemon made for it, in order (including what it does within a moment
 * after answering). The daemon keeps running.
 */
export async function traceDurableCalls<T>(run: DaemonRun, request: () => Promise<T>): Promise<{ calls: string[]; threads: number[]; value?: T; error?: Error }> {
  const output = `/tmp/stowage-crash-trace-${run.pid}-${Date.now()}`;
  const { tracer, tracerExited } = await attachStrace(run, ['-f', '-qq', '-o', output, '-e', `trace=${DURABLE_CALLS.join(',')}`]);
  const result = await request().then((value) => ({ value }), (error: unknown) => ({ error: error as Error }));
  await sleep(AFTER_REPLY_MS);
  tracer.kill('SIGINT');
  await Promise.race([tracerExited, sleep(5_000).then(() => tracer.kill('SIGKILL'))]);
  const text = await readFile(output, 'utf8').catch(() => '');
  await rm(output, { force: true });
  const names = new Set<string>(DURABLE_CALLS);
  const traced = text.split('\n')
    .map((line) => /^(?:(\d+)\s+)?([a-z0-9_]+)\(/.exec(line))
    .filter((m): m is RegExpExecArray => m !== null && names.has(m[2]!));
  // The thread of each call: strace's kill points count calls per thread.
  return { calls: traced.map((m) => m[2]!), threads: traced.map((m) => Number(m[1] ?? run.pid)), ...result };
}
