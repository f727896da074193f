import { isCommandError, type CommandRunner } from '../../core/command-runner.js';
import { ErrorCodes, StowageError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import {
  classifyCliText, parsePoolList, parseQuotaList, parseReply, parseVolumeInfo, parseVolumeStatus, quotaTimeoutOf,
  type GlusterPeer, type GlusterReply, type GlusterVolume, type GlusterVolumeStatus, type QuotaUsage,
} from './parsers.js';

export interface GlusterCliConfig {
  socket: string;
  logFile: string;
  timeoutMs: number;
  servers: readonly string[];
  nodeId: string;
}

/** gluster answers this while another node's transaction holds the cluster lock; it clears by itself. */
const LOCK_CONTENTION = /Another transaction is in progress|Locking failed|try again after sometime/i;
const LOCK_RETRIES = 5;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `gluster --mode=script --xml` as data: every call bounded, every reply read from `<opRet>`. */
export class GlusterCli {
  constructor(private readonly runner: CommandRunner, private readonly config: GlusterCliConfig, private readonly log: Logger) {}

  private unavailable(what: string, why: string, cause?: unknown): StowageError {
    return new StowageError(ErrorCodes.BACKEND_UNAVAILABLE,
      `gluster ${what} on node ${this.config.nodeId} failed: ${why}. Check that glusterd runs on this node ` +
      `(socket ${this.config.socket}) and that it is a peer of the trusted pool of ${this.config.servers.join(', ')} ` +
      '(gluster pool list)', { node: this.config.nodeId, cause });
  }

  /** Runs one command and returns gluster's reply, successful or not; throws only when there is no reply. */
  async call(args: readonly string[], volume?: string): Promise<GlusterReply> {
    const what = args.slice(0, 3).join(' ');
    const seconds = Math.max(1, Math.floor(this.config.timeoutMs / 1000));
    for (let attempt = 1; ; attempt += 1) {
      let result;
      try {
        result = await this.runner.run('gluster', [
          `--glusterd-sock=${this.config.socket}`, `--log-file=${this.config.logFile}`, '--mode=script', '--xml',
          // gluster's own timeout answers "Request timed out"; ours is the backstop if the CLI itself hangs.
          `--timeout=${seconds}`, ...args,
        ], { timeoutMs: this.config.timeoutMs + 5_000, allowFailure: true });
      } catch (err) {
        if (isCommandError(err, 'timeout')) throw this.unavailable(what, `no answer within ${seconds + 5} s`, err);
        if (isCommandError(err, 'spawn')) {
          throw this.unavailable(what, `the gluster CLI could not be run (${err.message}); install glusterfs-server`, err);
        }
        throw err;
      }
      const out = result.stdout.trim();
      if (!out.startsWith('<')) {
        const text = `${result.stdout}\n${result.stderr}`.trim();
        const kind = classifyCliText(text);
        if (kind === 'glusterd-unreachable') throw this.unavailable(what, 'glusterd is not reachable');
        if (kind === 'timeout') throw this.unavailable(what, `glusterd did not answer within ${seconds} s`);
        throw new StowageError(ErrorCodes.BACKEND_COMMAND,
          `gluster ${what} was refused: ${text.split('\n')[0] ?? 'no output'}`, { volume, cause: result });
      }
      const reply = parseReply(out);
      if (!reply.ok && LOCK_CONTENTION.test(reply.opErrstr) && attempt < LOCK_RETRIES) {
        this.log.warn(`gluster ${what}: ${reply.opErrstr}; retrying`);
        await sleep(300 * attempt);
        continue;
      }
      return reply;
    }
  }

  /** Like `call`, but a failed operation throws E_BACKEND_COMMAND with gluster's reason. */
  async expect(args: readonly string[], volume?: string): Promise<GlusterReply> {
    const reply = await this.call(args, volume);
    if (!reply.ok) {
      throw new StowageError(ErrorCodes.BACKEND_COMMAND,
        `gluster ${args.slice(0, 3).join(' ')} failed: ${reply.opErrstr || `opRet ${reply.opRet}`}`, { volume, cause: reply });
    }
    return reply;
  }

  /** The volume, or undefined when gluster says it does not exist. */
  async volumeInfo(name: string): Promise<GlusterVolume | undefined> {
    const reply = await this.call(['volume', 'info', name]);
    if (!reply.ok) {
      if (/does not exist/i.test(reply.opErrstr)) return undefined;
      throw new StowageError(ErrorCodes.BACKEND_COMMAND, `gluster volume info ${name} failed: ${reply.opErrstr}`, { cause: reply });
    }
    return parseVolumeInfo(reply.root).find((v) => v.name === name);
  }

  async allVolumes(): Promise<GlusterVolume[]> {
    return parseVolumeInfo((await this.expect(['volume', 'info'])).root);
  }

  async volumeStatus(name: string): Promise<GlusterVolumeStatus | undefined> {
    const reply = await this.call(['volume', 'status', name]);
    return reply.ok ? parseVolumeStatus(reply.root).find((v) => v.name === name) : undefined;
  }

  async peers(): Promise<GlusterPeer[]> {
    return parsePoolList((await this.expect(['pool', 'list'])).root);
  }

  /**
   * Usage of one directory, or undefined when gluster cannot show it. Known gap: the CLI reads
   * the numbers through an auxiliary mount under /var/run/gluster that belongs to whichever
   * mount namespace first asked, so from other namespaces it shows nothing.
   */
  async quotaUsage(volume: string, path: string): Promise<QuotaUsage | undefined> {
    const reply = await this.call(['volume', 'quota', volume, 'list', path]);
    if (!reply.ok) return undefined;
    return parseQuotaList(reply.root).find((q) => q.path === path);
  }

  /**
   * Sets a hard limit on `path`, enabling quota on the volume first when it is off, then makes
   * gluster re-check limits every `recheckSeconds` (see `quotaTimeouts`).
   */
  async limitUsage(volume: string, path: string, bytes: number, recheckSeconds: number): Promise<void> {
    const args = ['volume', 'quota', volume, 'limit-usage', path, String(bytes)];
    const first = await this.call(args);
    if (!first.ok) {
      if (!/quota is disabled/i.test(first.opErrstr)) {
        throw new StowageError(ErrorCodes.BACKEND_COMMAND, `setting a ${bytes}-byte quota on ${path} of gluster volume ${volume} failed: ${first.opErrstr}`);
      }
      const enabled = await this.call(['volume', 'quota', volume, 'enable']);
      if (!enabled.ok && !/already enabled/i.test(enabled.opErrstr)) {
        throw new StowageError(ErrorCodes.BACKEND_COMMAND, `enabling quota on gluster volume ${volume} failed: ${enabled.opErrstr}`);
      }
      this.log.info(`enabled directory quotas on gluster volume ${volume}`);
      await this.expect(args);
    }
    await this.quotaTimeouts(volume, recheckSeconds);
  }

  /**
   * Sets gluster's quota soft and hard timeouts (how long a brick trusts its cached usage
   * before asking again) to `seconds` where they differ. With gluster's defaults (60 s below
   * the soft limit, 5 s above it) writes run tens of MiB past a limit; at 0 every write is
   * checked. Requires quota to be enabled on the volume.
   */
  async quotaTimeouts(volume: string, seconds: number, known?: GlusterVolume): Promise<void> {
    const info = known ?? await this.volumeInfo(volume);
    for (const kind of ['soft-timeout', 'hard-timeout'] as const) {
      if (info && quotaTimeoutOf(info, kind) === seconds) continue;
      const reply = await this.call(['volume', 'quota', volume, kind, String(seconds)]);
      if (!reply.ok) {
        throw new StowageError(ErrorCodes.BACKEND_COMMAND,
          `setting the quota ${kind} of gluster volume ${volume} to ${seconds} s failed: ${reply.opErrstr || `opRet ${reply.opRet}`}`,
          { cause: reply });
      }
      this.log.info(`quota ${kind} of gluster volume ${volume} set to ${seconds} s`);
    }
  }

  /**
   * Drops the limit on `path`; a path without a limit is fine. A limit dropped by hand makes
   * gluster 10 fail with "removexattr failed on ... No data available" (ENODATA: the limit's
   * attribute is already gone), which is the state asked for.
   */
  async removeLimit(volume: string, path: string): Promise<void> {
    const reply = await this.call(['volume', 'quota', volume, 'remove', path]);
    if (!reply.ok && !/not set|quota is disabled|No such file|does not exist|removexattr failed .*No data available/i.test(reply.opErrstr)) {
      throw new StowageError(ErrorCodes.BACKEND_COMMAND, `removing the quota of ${path} on gluster volume ${volume} failed: ${reply.opErrstr}`);
    }
  }
}
