/**
 * stowage daemons run by the benchmark outside Docker: a raw spawn for cold-start timing (the
 * test helper polls every 50 ms, too coarse here), memory readings, and a poller that times the
 * first successful answers of a starting daemon.
 */
import { spawn } from 'node:child_process';
import { readFile, readlink } from 'node:fs/promises';
import { basename } from 'node:path';
import { CLI_PATH, cleanEnv } from '../test/helpers/daemon-process.js';
import { DAEMON_ENVIRONMENT } from '../src/drivers/cli/daemon-v8-flags.js';
import { callOnce, isNotListening, type PluginReply } from './socket-client.js';
import { errorMessage, now, sleep } from './util.js';

export interface RawDaemon {
  pid: number;
  /** `now()` just before the spawn. */
  spawnedAt: number;
  /** The last 64 KiB the daemon wrote to stdout and stderr. */
  log(): string;
  hasExited(): boolean;
  /** Sends `signal` (SIGKILL after `graceMs`) and waits for the exit; returns how long it took. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<number>;
}

const LOG_LIMIT = 64 * 1024;
const live = new Set<RawDaemon>();

/**
 * Spawns `node dist/bin/stowage.mjs daemon --socket SOCKET ARGS` directly, so the pid is node's.
 * `cli` selects another build of the CLI (to compare builds).
 */
export function spawnDaemon(socket: string, args: readonly string[], cli = CLI_PATH): RawDaemon {
  const spawnedAt = now();
  const child = spawn(process.execPath, [cli, 'daemon', '--socket', socket, ...args], {
    env: cleanEnv(DAEMON_ENVIRONMENT),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  const keep = (chunk: Buffer) => {
    log += chunk.toString('utf8');
    if (log.length > LOG_LIMIT) log = log.slice(-LOG_LIMIT);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let exited = false;
  const exit = new Promise<void>((resolve) => {
    child.once('exit', () => { exited = true; resolve(); });
    child.once('error', (err) => { exited = true; keep(Buffer.from(`spawn error: ${err.message}\n`)); resolve(); });
  });
  const daemon: RawDaemon = {
    pid: child.pid ?? -1,
    spawnedAt,
    log: () => log,
    hasExited: () => exited,
    stop: async (signal = 'SIGTERM', graceMs = 10_000) => {
      const start = now();
      if (!exited) {
        child.kill(signal);
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exit;
        clearTimeout(timer);
      }
      live.delete(daemon);
      return now() - start;
    },
  };
  live.add(daemon);
  return daemon;
}

/** SIGKILLs every raw daemon still running (cleanup on any path). */
export async function killRawDaemons(): Promise<void> {
  await Promise.all([...live].map((d) => d.stop('SIGKILL', 2_000)));
}

/** CPU time (user + system, all threads) the process has used so far, in ms; assumes USER_HZ = 100. */
export async function processCpuMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

export interface Memory {
  rssMb: number;
  /** Peak resident set size so far. */
  hwmMb: number;
}

/** VmRSS and VmHWM of `pid`, after checking that it is the node process running the stowage CLI. */
export async function daemonMemory(pid: number): Promise<Memory> {
  const exe = basename(await readlink(`/proc/${pid}/exe`));
  const cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
  if (!exe.startsWith('node') || !cmdline.includes(CLI_PATH)) {
    throw new Error(`pid ${pid} is ${exe} (${cmdline.join(' ')}), not the node process of the stowage daemon`);
  }
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string): number => {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
    if (!match) throw new Error(`no ${field} in /proc/${pid}/status`);
    return Number(match[1]);
  };
  return { rssMb: kb('VmRSS') / 1024, hwmMb: kb('VmHWM') / 1024 };
}

/**
 * VmRSS of an idle daemon: sampled every second for `seconds` with no request sent, the last
 * sample. V8 shrinks its heap some seconds after allocation stops (its "memory reducer", a
 * `Mark-Compact (reduce)` in --trace-gc), so the figure right after a burst of requests is a
 * passing peak, not what holding the volumes costs.
 */
export async function idleMemory(pid: number, seconds: number): Promise<{ rssMb: number; samplesMb: number[] }> {
  const samplesMb: number[] = [];
  for (let i = 0; i < seconds; i++) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    samplesMb.push((await daemonMemory(pid)).rssMb);
  }
  return { rssMb: samplesMb.at(-1) ?? NaN, samplesMb };
}

export interface FirstAnswer {
  /** From spawn to the end of the first successful request. */
  readyMs: number;
  /** Duration of that successful request alone. */
  requestMs: number;
  reply: PluginReply;
}

/** Polls `method` every `intervalMs` until the daemon answers it; connection errors mean "not yet". */
export async function firstAnswer(
  daemon: RawDaemon,
  socket: string,
  method: string,
  opts: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<FirstAnswer> {
  const deadline = now() + (opts.timeoutMs ?? 30_000);
  let last = 'no attempt';
  for (;;) {
    const start = now();
    try {
      const reply = await callOnce(socket, method, {}, 60_000);
      const end = now();
      return { readyMs: end - daemon.spawnedAt, requestMs: end - start, reply };
    } catch (error) {
      if (!isNotListening(error)) throw error;
      last = errorMessage(error);
    }
    if (daemon.hasExited()) throw new Error(`stowage daemon exited before answering ${method}:\n${daemon.log()}`);
    if (now() > deadline) throw new Error(`stowage daemon did not answer ${method} in time (last: ${last}):\n${daemon.log()}`);
    await sleep(opts.intervalMs ?? 2);
  }
}

export interface ColdStart {
  activate: FirstAnswer;
  list: FirstAnswer;
  listedCount: number;
}

/**
 * Spawns a daemon and polls Plugin.Activate and VolumeDriver.List side by side, so each time is
 * measured from the spawn on its own. Returns the running daemon with the timings.
 */
export async function coldStart(socket: string, args: readonly string[]): Promise<{ daemon: RawDaemon; result: ColdStart }> {
  const daemon = spawnDaemon(socket, args);
  try {
    const [activate, list] = await Promise.all([
      firstAnswer(daemon, socket, 'Plugin.Activate'),
      firstAnswer(daemon, socket, 'List'),
    ]);
    const volumes = list.reply.Volumes;
    if (!Array.isArray(volumes)) throw new Error('List after cold start answered without a Volumes array');
    return { daemon, result: { activate, list, listedCount: volumes.length } };
  } catch (error) {
    await daemon.stop('SIGKILL');
    throw error;
  }
}
