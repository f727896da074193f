/**
 * A docker node's private mount namespace: a "holder" process that bind-mounts the node's
 * private directories over the fixed paths dockerd reads or writes and then keeps the namespace
 * alive, the nsenter prefix that runs programs inside it, and the sweep that kills whatever is
 * left in it at the end.
 */
import { execa, type ResultPromise } from 'execa';
import { readdir, readlink } from 'node:fs/promises';
import { isZombie, sleep } from './child-process-stop.js';

/**
 * Binds the node's private dirs over dockerd's fixed paths (and, in a namespace of its own
 * network, brings up its loopback), says so, then just holds the namespace.
 */
const HOLDER_SCRIPT = [
  'set -e',
  'if [ "$2" = network ]; then ip link set lo up; fi',
  'mount --bind "$1/run" /run/docker',
  'mount --bind "$1/plugins" /run/docker/plugins',
  'mount --bind "$1/etc" /etc/docker',
  'mount --bind "$1/containerd" /run/containerd',
  'echo ready',
  'exec sleep infinity',
].join('\n');

/** Bind-mount targets must exist in the host's tree; these are empty dirs docker.io expects anyway. */
export const HOLDER_TARGETS = ['/run/docker/plugins', '/etc/docker', '/run/containerd'];

export type Holder = ResultPromise<{ readonly reject: false }>;

export interface HolderOptions {
  /**
   * Also a network namespace of its own (only `lo`, up): what a second Swarm node needs, since
   * two engines in one network namespace would share port 2377. `ip netns exec` would not do:
   * it remounts /sys and hides the cgroup mounts from dockerd.
   */
  network?: boolean;
}

/**
 * Starts the holder for node directory `dir`; wait for `holderReady` before using it. (Not
 * async: the holder is a thenable that settles only when it exits.)
 */
export function startHolder(dir: string, opts: HolderOptions = {}): Holder {
  const namespaces = opts.network === true ? ['-m', '-n'] : ['-m'];
  return execa(
    'setpriv',
    ['--pdeathsig', 'KILL', 'unshare', ...namespaces, '--propagation', 'private',
      'sh', '-c', HOLDER_SCRIPT, 'holder', dir, opts.network === true ? 'network' : 'host-network'],
    { reject: false },
  );
}

/** Resolves once the holder's bind mounts are in place; rejects if it exits first or takes over 10 s. */
export function holderReady(holder: Holder, what: string): Promise<void> {
  return waitForReady(holder, 10_000, what);
}

async function waitForReady(holder: Holder, timeoutMs: number, what: string): Promise<void> {
  let output = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} not ready after ${timeoutMs} ms: ${output}`)), timeoutMs);
    holder.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('ready\n')) {
        clearTimeout(timer);
        resolve();
      }
    });
    void holder.then((result) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited early (${result.exitCode ?? result.signal}): ${result.stderr}`));
    });
  });
}

/**
 * nsenter without --fork execs the program, so the execa pid is the program's pid. `network`:
 * the holder has a network namespace of its own, and the program joins it too.
 */
export function nsenterArgs(holderPid: number, cwd: string, network = false): string[] {
  return ['nsenter', '-t', String(holderPid), '-m', ...(network ? ['-n'] : []), `--wd=${cwd}`, '--'];
}

/** The namespace's identity (`mnt:[...]`), or undefined once the holder is gone. */
export function namespaceOf(pid: number): Promise<string | undefined> {
  return readlink(`/proc/${pid}/ns/mnt`).catch(() => undefined);
}

/** Pids (other than `except`) whose mount namespace is `namespace`, ignoring zombies. */
async function pidsInNamespace(namespace: string, except: number): Promise<number[]> {
  const pids = (await readdir('/proc')).filter((entry) => /^\d+$/.test(entry)).map(Number);
  const found = await Promise.all(
    pids.map(async (pid) => {
      if (pid === except || pid === process.pid) return undefined;
      const ns = await namespaceOf(pid);
      return ns === namespace && !(await isZombie(pid)) ? pid : undefined;
    }),
  );
  return found.filter((pid): pid is number => pid !== undefined);
}

/** Kills everything but the holder in `namespace`: SIGTERM, then SIGKILL, 5 s each. */
export async function killNamespace(namespace: string, holderPid: number): Promise<void> {
  for (const [signal, waitMs] of [['SIGTERM', 5_000], ['SIGKILL', 5_000]] as const) {
    const pids = await pidsInNamespace(namespace, holderPid);
    if (pids.length === 0) return;
    for (const pid of pids) {
      try {
        process.kill(pid, signal);
      } catch {
        // already gone
      }
    }
    const deadline = Date.now() + waitMs;
    while (Date.now() < deadline && (await pidsInNamespace(namespace, holderPid)).length > 0) await sleep(100);
  }
  const left = await pidsInNamespace(namespace, holderPid);
  if (left.length > 0) throw new Error(`pids ${left.join(', ')} survived SIGKILL`);
}
