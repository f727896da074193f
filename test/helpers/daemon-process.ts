/**
 * Helpers for tests that run stowage as a separate process: temp dirs, the built CLI, starting
 * `stowage daemon` and waiting until its socket accepts connections.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa, type Result, type ResultPromise } from 'execa';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The bundled CLI that package.json's bin and npm start run. */
export const CLI_PATH = join(REPO_ROOT, 'dist', 'bin', 'stowage.mjs');

/** Fails with a helpful message when dist/ was not built (`npm test` builds first). */
export function assertCliBuilt(): void {
  if (!existsSync(CLI_PATH)) {
    throw new Error(`${CLI_PATH} does not exist; run "npm run build" first (npm test does it for you)`);
  }
}

/** A fresh directory under the OS temp dir; kept short because unix socket paths max out at 107 bytes. */
export function makeTempDir(prefix = 'stowage-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

export async function removeTempDir(dir: string | undefined): Promise<void> {
  if (dir) await rm(dir, { recursive: true, force: true });
}

/** The environment of the test process without STOWAGE_SOCKET, plus `extra`. */
export function cleanEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value !== undefined && key !== 'STOWAGE_SOCKET') env[key] = value;
  }
  return { ...env, ...extra };
}

export interface CliResult {
  exitCode: number | undefined;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI to completion; never throws for a non-zero exit. */
export async function runCli(args: readonly string[], options: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<CliResult> {
  const result = await execa('node', [CLI_PATH, ...args], {
    reject: false,
    env: cleanEnv(options.env),
    extendEnv: false,
    timeout: options.timeoutMs ?? 20_000,
    stdin: 'ignore',
  });
  return { exitCode: result.exitCode, stdout: String(result.stdout), stderr: String(result.stderr) };
}

/** Resolves once something accepts connections on `socket`. */
export function canConnect(socket: string): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const probe = createConnection(socket);
    probe.once('connect', () => { probe.destroy(); resolvePromise(true); });
    probe.once('error', () => resolvePromise(false));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface DaemonHandle {
  socket: string;
  pid: number;
  /** Everything the daemon wrote to stderr so far (its log). */
  stderr(): string;
  /** Resolves when the process has ended. */
  exited: Promise<Result>;
  /** Sends `signal` and waits for the process to end. */
  stop(signal?: NodeJS.Signals): Promise<Result>;
}

const running = new Set<DaemonHandle>();

/**
 * Starts `stowage daemon ARGS --socket SOCKET` and waits until the socket accepts connections.
 * Rejects, with the daemon's stderr, if it exits first or is not up within `timeoutMs`.
 */
export async function startDaemon(
  socket: string,
  args: readonly string[],
  options: { timeoutMs?: number; env?: Record<string, string>; cliPath?: string } = {},
): Promise<DaemonHandle> {
  const child: ResultPromise = execa('node', [options.cliPath ?? CLI_PATH, 'daemon', '--socket', socket, ...args], {
    reject: false,
    env: cleanEnv(options.env),
    extendEnv: false,
    buffer: false,
    stdin: 'ignore',
  });
  let log = '';
  child.stderr?.on('data', (chunk: Buffer) => { log += chunk.toString('utf8'); });
  child.stdout?.on('data', (chunk: Buffer) => { log += chunk.toString('utf8'); });
  let ended = false;
  const exited = child.then((result) => { ended = true; return result; });
  const handle: DaemonHandle = {
    socket,
    pid: child.pid ?? -1,
    stderr: () => log,
    exited,
    stop: async (signal = 'SIGTERM') => {
      if (!ended) child.kill(signal);
      const result = await exited;
      running.delete(handle);
      return result;
    },
  };
  running.add(handle);
  const deadline = Date.now() + (options.timeoutMs ?? 15_000);
  while (!(await canConnect(socket))) {
    if (ended) {
      running.delete(handle);
      const result = await exited;
      throw new Error(`stowage daemon exited (code ${result.exitCode}, signal ${result.signal}) before listening on ${socket}:\n${log}`);
    }
    if (Date.now() > deadline) {
      await handle.stop('SIGKILL');
      throw new Error(`stowage daemon did not listen on ${socket} in time:\n${log}`);
    }
    await sleep(50);
  }
  return handle;
}

/** Kills every daemon a test left running (for afterEach/afterAll). */
export async function killAllDaemons(): Promise<void> {
  await Promise.all([...running].map((d) => d.stop('SIGKILL')));
}
