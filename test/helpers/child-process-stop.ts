/**
 * Stopping test helper processes and telling whether a pid still lives: shared by the docker
 * node harness (its dockerd, holder and spawned programs) and the reaper of orphaned nodes.
 */
import { readFile } from 'node:fs/promises';

/** What `terminate` needs of an execa subprocess, whatever its options. */
export type Stoppable = Promise<unknown> & {
  kill(signal?: NodeJS.Signals): boolean;
  readonly exitCode: number | null;
  readonly signalCode: NodeJS.Signals | null;
  readonly pid?: number;
};

/** Signal an execa child and wait for it, escalating to SIGKILL after `ms`. */
export async function terminate(child: Stoppable, ms: number, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill(signal);
  if (await settlesWithin(child, ms)) return;
  child.kill('SIGKILL');
  if (!(await settlesWithin(child, 5_000))) throw new Error(`pid ${child.pid} survived SIGKILL`);
}

export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  const settled = promise.then(
    () => true,
    () => true,
  );
  try {
    return await Promise.race([settled, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Orphans are reparented to pid 1, which on these machines reaps them late: a zombie counts as gone. */
export async function isZombie(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state === '' || state === 'Z' || state === 'X';
}

export function pidAlive(pid: number): Promise<boolean> {
  return isZombie(pid).then((zombie) => !zombie);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
