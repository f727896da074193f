import { formatBytesApprox } from '../../core/options.js';
import type { PoolStatus } from './status-parser.js';

/**
 * New volumes and snapshots are refused once less than this fraction of the pool's data or
 * metadata space is free (as Docker's devicemapper `dm.min_free_space`, 10%), so the space left
 * goes to writes into existing volumes instead of failing them.
 */
export const MIN_FREE_FRACTION = 0.1;

export type PoolCondition = 'healthy' | 'nearly-full' | 'out-of-data-space' | 'read-only' | 'needs-check' | 'failed';

export interface PoolHealth {
  condition: PoolCondition;
  /** Whether new thin devices may be made. */
  canCreate: boolean;
  /** What is wrong and what to do, for people; absent when healthy. */
  problem?: string;
  /** Facts for `stowage info` and volume Status. */
  facts: Record<string, string>;
}

function percent(used: number, total: number): string {
  return total === 0 ? '0.0%' : `${((used / total) * 100).toFixed(1)}%`;
}

/** Turns a parsed `dmsetup status` of the pool into a verdict with people-readable facts. */
export function evaluatePoolHealth(pool: string, status: PoolStatus, blockSectors: number): PoolHealth {
  if (status.failed) {
    return {
      condition: 'failed',
      canCreate: false,
      problem: `thin pool ${pool} has failed (dmsetup status reports Fail, usually after metadata I/O errors); ` +
        `check the kernel log, deactivate the pool and repair its metadata with thin_check/thin_repair`,
      facts: { poolHealth: 'failed' },
    };
  }
  const blockBytes = blockSectors * 512;
  const dataFree = 1 - status.usedDataBlocks / Math.max(1, status.totalDataBlocks);
  const metaFree = 1 - status.usedMetadataBlocks / Math.max(1, status.totalMetadataBlocks);
  const facts: Record<string, string> = {
    poolDataUsed: `${formatBytesApprox(status.usedDataBlocks * blockBytes, 1)} of ${formatBytesApprox(status.totalDataBlocks * blockBytes, 1)} ` +
      `(${percent(status.usedDataBlocks, status.totalDataBlocks)})`,
    poolMetadataUsed: `${status.usedMetadataBlocks} of ${status.totalMetadataBlocks} blocks ` +
      `(${percent(status.usedMetadataBlocks, status.totalMetadataBlocks)})`,
    poolMode: status.mode,
  };
  const usage = `data ${facts.poolDataUsed} used, metadata ${percent(status.usedMetadataBlocks, status.totalMetadataBlocks)} used`;
  let condition: PoolCondition = 'healthy';
  let problem: string | undefined;
  if (status.needsCheck) {
    condition = 'needs-check';
    problem = `thin pool ${pool} is flagged needs_check after a metadata error; deactivate it, run thin_check ` +
      `(and thin_repair) on its metadata device, then start stowage again`;
  } else if (status.mode === 'ro') {
    condition = 'read-only';
    problem = `thin pool ${pool} is read-only (metadata error or metadata space exhausted, ${usage}); ` +
      `check the kernel log and the metadata device`;
  } else if (status.mode === 'out_of_data_space') {
    condition = 'out-of-data-space';
    problem = `thin pool ${pool} is out of data space (${usage}); writes to its volumes fail. Remove volumes or ` +
      `snapshots you no longer need, or extend the data device and reload the pool`;
  } else if (dataFree < MIN_FREE_FRACTION || metaFree < MIN_FREE_FRACTION) {
    condition = 'nearly-full';
    problem = `thin pool ${pool} is nearly full (${usage}); stowage makes no new volumes or snapshots while less than ` +
      `${MIN_FREE_FRACTION * 100}% of its data or metadata space is free, so existing volumes can keep writing. ` +
      `Remove volumes or snapshots you no longer need, or extend the pool`;
  }
  facts.poolHealth = condition;
  return { condition, canCreate: problem === undefined, ...(problem ? { problem } : {}), facts };
}
