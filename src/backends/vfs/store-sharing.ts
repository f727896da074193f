/**
 * Deciding whether a vfs store is used by more than one node, from evidence rather than a flag
 * alone: a Convoy command line without `vfs.shared=true` on two nodes must not run unprotected.
 * Pure functions; the backend gathers the inputs.
 */
import type { MountinfoEntry } from '../../core/proc-mounts.js';

/** Filesystem types that other machines can mount at the same time. */
const NETWORK_FS = new Set([
  'nfs', 'nfs4', 'glusterfs', 'fuse.glusterfs', 'cifs', 'smb3', 'smbfs', 'ceph', 'fuse.ceph', 'fuse.ceph-fuse',
  '9p', 'fuse.sshfs', 'sshfs', 'lustre', 'gpfs', 'ocfs2', 'gfs2', 'beegfs', 'fuse.beegfs', 'afs', 'fuse.moosefs',
  'fuse.lizardfs', 'fuse.juicefs', 'fuse.s3fs', 'fuse.rclone', 'fuse.gcsfuse', 'orangefs', 'pvfs2', 'virtiofs',
]);

export function isNetworkFsType(fstype: string): boolean {
  return NETWORK_FS.has(fstype.toLowerCase());
}

export interface SharingEvidence {
  /** The mount holding vfs.path, when /proc/self/mountinfo could be read. */
  mount?: MountinfoEntry;
  /** Node ids other than this one with a record in `.stowage/cluster/nodes/`. */
  otherNodes: readonly string[];
  /** Node ids other than this one that created volumes in the registry. */
  otherCreators: readonly string[];
}

export interface SharingDecision {
  scope: 'local' | 'global';
  /** Each piece of evidence that the store is shared, in words; empty when none. */
  evidence: string[];
}

const listed = (ids: readonly string[]) => ids.slice(0, 5).join(', ') + (ids.length > 5 ? `, ... (${ids.length})` : '');

export function sharingEvidence(found: SharingEvidence): string[] {
  const evidence: string[] = [];
  if (found.mount && isNetworkFsType(found.mount.fstype)) {
    evidence.push(`${found.mount.mountPoint} is a ${found.mount.fstype} mount (${found.mount.source})`);
  }
  if (found.otherNodes.length > 0) evidence.push(`the store holds records of other nodes: ${listed(found.otherNodes)}`);
  if (found.otherCreators.length > 0) evidence.push(`the store holds volumes created by other nodes: ${listed(found.otherCreators)}`);
  return evidence;
}

/**
 * `true` is global whatever the evidence; `auto` is global on any evidence; `false` is local
 * and only valid without evidence (the caller refuses to start otherwise).
 */
export function decideSharing(flag: boolean | 'auto', found: SharingEvidence): SharingDecision {
  const evidence = sharingEvidence(found);
  const scope = flag === true || (flag === 'auto' && evidence.length > 0) ? 'global' : 'local';
  return { scope, evidence };
}
