/**
 * Process, mount and lock housekeeping for the private test glusterd (test/helpers/glusterd.ts):
 * finding its processes by the harness dir named in their command lines, unmounting its FUSE
 * mounts, reaping harness dirs of test processes that died, and the machine-wide lock that
 * keeps test glusterds one at a time.
 */
import { execa } from 'execa';
import { readdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const DIR_PREFIX = 'stowage-gluster-';
const LOCK_FILE = join(tmpdir(), 'stowage-test-glusterd.lock');
const LOCK_WAIT_MS = 180_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Unmounts (lazily if needed) FUSE gluster mounts under `dir` or of our volumes' quota helpers; returns what is left. */
export async function unmountGlusterUnder(dir: string, volumes: ReadonlySet<string>): Promise<string[]> {
  const ours = (point: string) => point === dir || point.startsWith(`${dir}/`) ||
    [...volumes].some((v) => point.startsWith(`/var/run/gluster/${v}_quota_`) || point.startsWith(`/run/gluster/${v}_quota_`));
  const list = async () => (await mountPoints()).filter(ours).sort((a, b) => b.length - a.length);
  for (const point of await list()) {
    const plain = await execa('umount', [point], { reject: false, timeout: 20_000 });
    if (plain.exitCode !== 0) await execa('umount', ['-l', point], { reject: false, timeout: 20_000 });
  }
  return list();
}

async function mountPoints(): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return text.split('\n').map((line) => line.split(' ')[4]).filter((p): p is string => p !== undefined)
    .map((p) => p.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8))));
}

/** Pids (not ours) whose command line names `dir`: bricks, self-heal and quota daemons, FUSE clients. */
async function pidsNaming(dir: string): Promise<number[]> {
  const pids = (await readdir('/proc')).filter((e) => /^\d+$/.test(e)).map(Number).filter((p) => p !== process.pid);
  const found = await Promise.all(pids.map(async (pid) => {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    return cmdline.includes(dir) && !(await isZombie(pid)) ? pid : undefined;
  }));
  return found.filter((p): p is number => p !== undefined);
}

export async function killProcessesOf(dir: string): Promise<void> {
  for (const [signal, waitMs] of [['SIGTERM', 5_000], ['SIGKILL', 5_000]] as const) {
    const pids = await pidsNaming(dir);
    if (pids.length === 0) break;
    for (const pid of pids) {
      try { process.kill(pid, signal); } catch { /* already gone */ }
    }
    const deadline = Date.now() + waitMs;
    while (Date.now() < deadline && (await pidsNaming(dir)).length > 0) await sleep(100);
  }
  const left = await pidsNaming(dir);
  if (left.length > 0) throw new Error(`pids ${left.join(', ')} survived SIGKILL`);
}

async function isZombie(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state === '' || state === 'Z' || state === 'X';
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Harness dirs of test processes that died without `stop()`: kill their processes, unmount, delete. */
export async function reapOrphans(base: string): Promise<void> {
  for (const entry of (await readdir(base).catch(() => [] as string[])).filter((e) => e.startsWith(DIR_PREFIX))) {
    const dir = join(base, entry);
    const owner = await readFile(join(dir, 'owner.json'), 'utf8')
      .then((t) => (JSON.parse(t) as { pid?: unknown }).pid).catch(() => undefined);
    if (typeof owner === 'number' && pidAlive(owner)) continue;
    await unmountGlusterUnder(dir, new Set());
    await killProcessesOf(dir).catch(() => undefined);
    if ((await unmountGlusterUnder(dir, new Set())).length === 0) await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

export async function acquireLock(): Promise<void> {
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      await writeFile(LOCK_FILE, JSON.stringify({ pid: process.pid }), { flag: 'wx' });
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const holder = await readFile(LOCK_FILE, 'utf8').then((t) => (JSON.parse(t) as { pid?: unknown }).pid).catch(() => undefined);
    if (typeof holder !== 'number' || (!pidAlive(holder) && holder !== process.pid)) {
      await unlink(LOCK_FILE).catch(() => undefined);
      continue;
    }
    if (Date.now() > deadline) {
      throw new Error(`another test process (pid ${holder}) has held the private glusterd for over ${LOCK_WAIT_MS} ms (${LOCK_FILE})`);
    }
    await sleep(250);
  }
}

export async function releaseLock(): Promise<void> {
  const holder = await readFile(LOCK_FILE, 'utf8').then((t) => (JSON.parse(t) as { pid?: unknown }).pid).catch(() => undefined);
  if (holder === process.pid) await unlink(LOCK_FILE).catch(() => undefined);
}

export function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
  });
}

export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true, () => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
