import { join } from 'node:path';
import { CLUSTER_LAYOUT, legacyNodeRecordSchema, nodeRecordSchema } from '../../core/cluster/node-record.js';
import { ErrorCodes, StowageError } from '../../core/errors.js';
import type { FsPort } from '../../core/fs-port.js';
import { isValidNodeId } from '../../core/names.js';
import { formatBytesApprox } from '../../core/options.js';
import { readFileNoFollow } from '../../core/safe-path.js';
import { parseRecordText } from '../../core/schema/parse-record.js';
import type { GlusterCli } from './gluster-cli.js';
import type { GlusterVolume } from './parsers.js';
import type { StoredRecord } from './volume-record.js';

/**
 * True when `nodeId` has a valid node record in this deployment's cluster state: the only
 * evidence that a record written before deployments were recorded was made by this deployment.
 */
export async function isKnownNode(fs: FsPort, clusterStateDir: string, nodeId: string): Promise<boolean> {
  if (!isValidNodeId(nodeId)) return false;
  // Layout 2's record, or layout 1's while a node of this version has not yet moved it aside.
  for (const [dir, schema] of [[CLUSTER_LAYOUT.members, nodeRecordSchema], [CLUSTER_LAYOUT.legacyNodes, legacyNodeRecordSchema]] as const) {
    const path = join(clusterStateDir, dir, `${nodeId}.json`);
    try {
      const text = await readFileNoFollow(fs, path);
      if (text !== undefined && parseRecordText(schema, text, `node record ${path}`).nodeId === nodeId) return true;
    } catch {
      // Not a valid record (or `nodes` is layout 2's file): no evidence here.
    }
  }
  return false;
}

/** What this node should say about a volume whose size enforcement disagrees with its own glusterfs.quota. */
export function quotaWarning(record: StoredRecord, gluster: string, quotaOn: boolean): string | undefined {
  const size = record.options.size;
  if (size === undefined || record.sizeEnforced === undefined || record.sizeEnforced === quotaOn) return undefined;
  return record.sizeEnforced
    ? `size ${formatBytesApprox(size)} is enforced by a gluster quota that node ${record.createdBy} set (glusterfs.quota=true ` +
      'there), although this node has glusterfs.quota=false'
    : `size ${formatBytesApprox(size)} is recorded but not enforced: volume ${record.name} was made by node ${record.createdBy} ` +
      `with glusterfs.quota=false, so gluster volume ${gluster} has no limit. To enforce it: ` +
      `gluster volume quota ${gluster} enable; gluster volume quota ${gluster} limit-usage / ${size}`;
}

/**
 * The hard limit on `/` of a gluster volume stowage is about to adopt: `{ limit: undefined }`
 * when it has none, or an E_DATA_CONFLICT when quota is on but the limit cannot be read (the
 * CLI reads limits through a helper mount other mount namespaces may not see).
 */
export async function existingLimitOf(cli: GlusterCli, volume: GlusterVolume, name: string): Promise<{ limit?: number }> {
  if (volume.options['features.quota'] !== 'on') return {};
  const usage = await cli.quotaUsage(volume.name, '/').catch(() => undefined);
  if (!usage) {
    throw new StowageError(ErrorCodes.DATA_CONFLICT,
      `gluster volume ${volume.name} has quota enabled, and its limit on / cannot be read here, so stowage cannot tell whether ` +
      `adopting it as volume ${name} would change it; check with gluster volume quota ${volume.name} list /, then adopt without ` +
      'a size (the volume keeps whatever limit it has)', { volume: name });
  }
  return { limit: usage.hardLimit };
}

/** Refuses an adopt whose size would replace a different existing limit. */
export function checkAdoptedLimit(existing: number | undefined, size: number | undefined, gluster: string, name: string): void {
  if (existing === undefined || size === undefined || existing === size) return;
  throw new StowageError(ErrorCodes.DATA_CONFLICT,
    `gluster volume ${gluster} already has a limit of ${formatBytesApprox(existing)} on /, and stowage does not overwrite it: ` +
    `adopt it as volume ${name} with size ${existing} or without a size, or change the limit yourself first ` +
    `(gluster volume quota ${gluster} limit-usage / BYTES)`, { volume: name });
}
