import { formatBytesApprox } from '../../core/options.js';
import type { CommandRunner } from '../../core/command-runner.js';
import type { GlusterCli } from './gluster-cli.js';
import { messageOf } from '../../core/errors.js';

/** Parses `stat -f --format='%S %b %f'`: block size, total blocks, free blocks. */
export function parseStatfs(text: string): { totalBytes: number; usedBytes: number } | undefined {
  const match = /^(\d+) (\d+) (\d+)$/.exec(text.trim());
  if (!match) return undefined;
  const [size, blocks, free] = [Number(match[1]), Number(match[2]), Number(match[3])];
  return { totalBytes: size * blocks, usedBytes: size * (blocks - free) };
}

/**
 * Quota facts of one directory for Status. First from `gluster volume quota VOL list PATH`;
 * when the CLI cannot show it (it reads through an auxiliary mount that other mount namespaces
 * do not see), from statfs through our own mount, which gluster answers with the directory's
 * quota (`features.quota-deem-statfs`, on by default with quota). Never throws.
 */
export async function quotaFacts(
  cli: GlusterCli, runner: CommandRunner, volume: string, glusterPath: string, localPath: string, timeoutMs: number,
  expectedLimit: number,
): Promise<Record<string, string>> {
  try {
    const usage = await cli.quotaUsage(volume, glusterPath);
    if (usage?.hardLimit !== undefined) {
      return {
        quotaLimit: formatBytesApprox(usage.hardLimit),
        quotaUsed: formatBytesApprox(usage.usedBytes ?? 0),
        quotaExceeded: usage.hardLimitExceeded ? 'yes' : 'no',
        quotaSource: 'gluster quota list',
      };
    }
  } catch {
    // fall through to statfs: the CLI is down or hung, the mount may still answer
  }
  try {
    const result = await runner.run('stat', ['--file-system', '--format=%S %b %f', '--', localPath], { timeoutMs, allowFailure: true });
    const fs = result.exitCode === 0 ? parseStatfs(result.stdout) : undefined;
    // Without a limit statfs answers for the whole gluster volume; do not pass that off as the quota.
    if (fs && fs.totalBytes === expectedLimit) {
      return { quotaLimit: formatBytesApprox(fs.totalBytes), quotaUsed: formatBytesApprox(fs.usedBytes), quotaSource: 'statfs' };
    }
    if (fs) return { quota: `no limit visible (capacity ${formatBytesApprox(fs.totalBytes)}, used ${formatBytesApprox(fs.usedBytes)})` };
    return { quota: `unavailable: ${result.stderr.trim() || 'unreadable statfs output'}` };
  } catch (err) {
    return { quota: `unavailable: ${messageOf(err)}` };
  }
}
