import { join } from 'node:path';
import type { CommandRunner } from '../../core/command-runner.js';
import { ErrorCodes, StowageError, errnoCode, messageOf } from '../../core/errors.js';
import type { FsPort } from '../../core/fs-port.js';
import type { Logger } from '../../core/logger.js';
import { mountAt, parseProcMounts, type MountEntry } from '../../core/proc-mounts.js';
import { explainMountLog } from './mount-log.js';

export interface MounterConfig {
  servers: readonly string[];
  mountOptions: readonly string[];
  timeoutMs: number;
  /** Directory for one client log per mounted gluster volume. */
  logDir: string;
  nodeId: string;
}

export interface MountRequest {
  /** Gluster volume to mount (its root). */
  volume: string;
  target: string;
  /** The stowage volume this is for, for error messages. */
  forVolume?: string;
}

type Health = { state: 'absent' } | { state: 'live' } | { state: 'dead'; why: string } | { state: 'foreign'; entry: MountEntry };

const FUSE_TYPE = 'fuse.glusterfs';
const PROBE_MS = 10_000;
/** How long past its own timeout a killed program may take to let go of its output. */
const GRACE_MS = 3_000;

/** The value or error of `promise`, or undefined if it has not settled within `ms`. */
async function settleWithin<T>(promise: Promise<T>, ms: number): Promise<T | Error | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)));
  try {
    return await Promise.race([promise.catch((err: unknown) => (err instanceof Error ? err : new Error(String(err)))), late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * FUSE mounts of gluster volumes. A path is only ever handed out after /proc/self/mounts shows
 * `fuse.glusterfs` from the expected volume at the target *and* a bounded `stat` through it
 * answers: mount's exit code is not trusted (a client can be mounted yet never get its volume
 * definition, and a missing subdir was seen to exit 0 with nothing mounted).
 */
export class GlusterMounter {
  /** The ensure under way per target. */
  private readonly inFlight = new Map<string, Promise<void>>();

  constructor(
    private readonly runner: CommandRunner,
    private readonly fs: FsPort,
    private readonly config: MounterConfig,
    private readonly log: Logger,
  ) {}

  private sources(volume: string): string[] {
    return this.config.servers.map((server) => `${server}:/${volume}`);
  }

  private async mounts(): Promise<MountEntry[]> {
    return parseProcMounts(await this.fs.readFile('/proc/self/mounts', 'utf8'));
  }

  /**
   * statfs in a child process: a hung FUSE mount then costs a killed child, not a stuck thread
   * of ours. statfs, unlike stat, is never answered from the kernel's attribute cache, so a dead
   * client or a volume whose bricks are gone shows at once.
   */
  private async probe(target: string): Promise<string | undefined> {
    try {
      const result = await this.runner.run('stat', ['--file-system', '--format=%b', '--', target],
        { timeoutMs: Math.min(PROBE_MS, this.config.timeoutMs), allowFailure: true });
      if (result.exitCode === 0) return undefined;
      return /Transport endpoint is not connected/i.test(result.stderr)
        ? 'Transport endpoint is not connected' : (result.stderr.trim() || `stat exited ${result.exitCode}`);
    } catch (err) {
      return `it did not answer within ${Math.min(PROBE_MS, this.config.timeoutMs) / 1000} s (${messageOf(err)})`;
    }
  }

  /** Whether /proc shows our gluster mount at `target` (no probe: cheap enough for every Get). */
  async isMounted(volume: string, target: string): Promise<boolean> {
    const entry = mountAt(await this.mounts(), target);
    return entry?.fstype === FUSE_TYPE && this.sources(volume).includes(entry.source);
  }

  async health(volume: string, target: string): Promise<Health> {
    const entry = mountAt(await this.mounts(), target);
    if (!entry) return { state: 'absent' };
    if (entry.fstype !== FUSE_TYPE || !this.sources(volume).includes(entry.source)) return { state: 'foreign', entry };
    const why = await this.probe(target);
    return why === undefined ? { state: 'live' } : { state: 'dead', why };
  }

  private unavailable(request: MountRequest, why: string): StowageError {
    const forVolume = request.forVolume ? ` for volume ${request.forVolume}` : '';
    return new StowageError(ErrorCodes.BACKEND_UNAVAILABLE,
      `cannot mount gluster volume ${request.volume}${forVolume} at ${request.target} on node ${this.config.nodeId}: ${why}`,
      { volume: request.forVolume, node: this.config.nodeId });
  }

  /**
   * Makes sure a live mount of `volume` is at `target`, remounting a dead one. Idempotent.
   * One at a time per target: callers that meet a dead mount together share one remount, which
   * would otherwise stack a FUSE mount (and a client) per caller at the same point.
   */
  ensure(request: MountRequest): Promise<void> {
    const running = this.inFlight.get(request.target);
    if (running) return running;
    const work = this.ensureOnce(request).finally(() => this.inFlight.delete(request.target));
    this.inFlight.set(request.target, work);
    return work;
  }

  private async ensureOnce(request: MountRequest): Promise<void> {
    const health = await this.health(request.volume, request.target);
    if (health.state === 'live') return;
    if (health.state === 'foreign') {
      throw this.unavailable(request, `${health.entry.source} (${health.entry.fstype}) is mounted there instead; unmount it`);
    }
    if (health.state === 'dead') {
      this.log.warn(`gluster mount ${request.target} of ${request.volume} is dead (${health.why}); mounting it again`);
      await this.forceUnmount(request.target);
    }
    await this.mount(request);
  }

  private async mount(request: MountRequest): Promise<void> {
    const { target, volume } = request;
    await this.fs.mkdir(target, { recursive: true, mode: 0o755 });
    // The mount point itself is a local directory: anything in it was written while the gluster
    // mount was missing, and mounting over it would hide that data rather than explain it.
    const strays = await this.fs.readdir(target);
    if (strays.length > 0) {
      throw this.unavailable(request, `the mount point is not empty (${strays.slice(0, 3).join(', ')}...) although ` +
        'nothing is mounted there: something wrote into the local directory; move those files away');
    }
    await this.fs.mkdir(this.config.logDir, { recursive: true });
    const logFile = join(this.config.logDir, `${volume}.log`);
    const options = [`log-file=${logFile}`, ...this.config.mountOptions];
    if (this.config.servers.length > 1) options.push(`backup-volfile-servers=${this.config.servers.slice(1).join(':')}`);
    const logStart = await this.fs.stat(logFile).then((s) => s.size, () => 0);
    let failure: string | undefined;
    const running = this.runner.run('mount', ['-t', 'glusterfs', '-o', options.join(','),
      `${this.config.servers[0]}:/${volume}`, target], { timeoutMs: this.config.timeoutMs, allowFailure: true });
    // mount.glusterfs leaves children (the client, its own stat of the mount point) that keep
    // mount's output open after mount itself is killed, so the runner's timeout alone does not
    // return; race it, and the cleanup below (killing the client) lets those children finish.
    const outcome = await settleWithin(running, this.config.timeoutMs + GRACE_MS);
    if (outcome === undefined) failure = `mount did not finish within ${this.config.timeoutMs / 1000} s`;
    else if (outcome instanceof Error) failure = outcome.message;
    else if (outcome.exitCode !== 0) failure = outcome.stderr.trim() || outcome.stdout.trim() || `mount exited ${outcome.exitCode}`;
    const health = await this.health(volume, target);
    if (failure === undefined && health.state === 'live') {
      this.log.info(`mounted gluster volume ${volume} at ${target}`);
      return;
    }
    if (health.state !== 'absent') await this.forceUnmount(target);
    await this.killClientsOf(target);
    if (outcome === undefined) await settleWithin(running, GRACE_MS);
    const log = await this.readLogSince(logFile, logStart);
    const reason = explainMountLog(log, volume, this.config.servers) ??
      (failure ?? (health.state === 'absent' ? 'mount reported success but nothing is mounted' : 'the new mount does not answer'));
    throw this.unavailable(request, `${reason} (client log: ${logFile})`);
  }

  private async readLogSince(file: string, offset: number): Promise<string> {
    const text = await this.fs.readFile(file, 'utf8').catch(() => '');
    return text.length >= offset ? text.slice(offset) : text;
  }

  private async layersAt(target: string): Promise<number> {
    return (await this.mounts()).filter((m) => m.target === target).length;
  }

  /**
   * Unmounts every mount stacked at `target` (one left by an earlier version's concurrent
   * remounts hides the next); lazily where a plain unmount is refused (busy or hung).
   */
  async unmount(target: string): Promise<void> {
    await this.inFlight.get(target)?.catch(() => undefined);
    for (let layers = await this.layersAt(target); layers > 0;) {
      const plain = await this.runner.run('umount', [target], { timeoutMs: this.config.timeoutMs, allowFailure: true })
        .catch((err: unknown) => ({ exitCode: -1, stderr: messageOf(err), stdout: '' }));
      const left = await this.layersAt(target);
      if (plain.exitCode !== 0 && left >= layers) {
        this.log.warn(`umount ${target} failed (${plain.stderr.trim()}); detaching it lazily`);
        await this.forceUnmount(target);
        return;
      }
      layers = left;
    }
  }

  /**
   * Unmounts every mount at `target` with plain unmounts only, which the kernel refuses while
   * anything uses one, and only when each is a gluster mount of `volume`: 'foreign' if one is
   * not, 'busy' if one was refused, 'done' once nothing is mounted there.
   */
  async unmountIfIdle(volume: string, target: string): Promise<'done' | 'busy' | 'foreign'> {
    await this.inFlight.get(target)?.catch(() => undefined);
    const layers = (await this.mounts()).filter((m) => m.target === target);
    if (layers.some((m) => m.fstype !== FUSE_TYPE || !this.sources(volume).includes(m.source))) return 'foreign';
    for (let left = layers.length; left > 0;) {
      await this.runner.run('umount', [target], { timeoutMs: this.config.timeoutMs, allowFailure: true }).catch(() => undefined);
      const now = await this.layersAt(target);
      if (now >= left) return 'busy';
      left = now;
    }
    return 'done';
  }

  /** Detaches every mount stacked at `target` lazily. */
  private async forceUnmount(target: string): Promise<void> {
    for (let layers = await this.layersAt(target); layers > 0;) {
      await this.runner.run('umount', ['-l', target], { timeoutMs: this.config.timeoutMs, allowFailure: true }).catch(() => undefined);
      const left = await this.layersAt(target);
      if (left >= layers) {
        throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE,
          `cannot unmount ${target} on node ${this.config.nodeId}; unmount it by hand (umount -l ${target})`, { node: this.config.nodeId });
      }
      layers = left;
    }
  }

  /**
   * A client whose mount attempt we gave up on would otherwise wait for glusterd forever and
   * might complete the mount later behind our back. Clients are found by their command line,
   * whose last argument is the mount point.
   */
  private async killClientsOf(target: string): Promise<void> {
    const entries = await this.fs.readdir('/proc').catch(() => [] as string[]);
    for (const pid of entries.filter((e) => /^\d+$/.test(e))) {
      const args = (await this.fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0').filter(Boolean);
      if (!/(^|\/)glusterfs$/.test(args[0] ?? '') || args[args.length - 1] !== target) continue;
      try {
        process.kill(Number(pid), 'SIGKILL');
        this.log.warn(`killed gluster client ${pid} left by the failed mount at ${target}`);
      } catch (err) {
        if (errnoCode(err) !== 'ESRCH') throw err;
      }
    }
  }
}
