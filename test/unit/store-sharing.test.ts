import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { mountOf, parseMountinfo } from '../../src/core/proc-mounts.js';
import { decideSharing, isNetworkFsType } from '../../src/backends/vfs/store-sharing.js';

const fixture = readFileSync(join(import.meta.dirname, '../fixtures/mountinfo/nodes.txt'), 'utf8');
const entries = parseMountinfo(fixture);
const none = { otherNodes: [], otherCreators: [] };

describe('vfs store sharing', () => {
  it('finds the mount holding a path: the longest mount point on a component boundary, the last of stacked ones', () => {
    expect(mountOf(entries, '/mnt/nfs/volumes')?.fstype).toBe('nfs4');
    expect(mountOf(entries, '/mnt/nfs')?.fstype).toBe('nfs4');
    expect(mountOf(entries, '/mnt/nfs/local/x')?.fstype).toBe('ext4');
    expect(mountOf(entries, '/mnt/nfsx')?.fstype).toBe('tmpfs');
    expect(mountOf(entries, '/srv/nfsish/v')?.fstype).toBe('ext4');
    expect(mountOf(entries, '/srv/gluster/vols')).toMatchObject({ fstype: 'fuse.glusterfs', source: 'localhost:/pool' });
    expect(mountOf(entries, '/srv/with space/v')?.fstype).toBe('cifs');
    expect(mountOf(entries, '/srv/stack/v')?.fstype).toBe('ceph');
    expect(mountOf(entries, '/var/lib/stowage')?.mountPoint).toBe('/');
  });

  it('knows network filesystems from local ones', () => {
    for (const t of ['nfs', 'nfs4', 'fuse.glusterfs', 'glusterfs', 'cifs', 'smb3', 'ceph', 'fuse.ceph', '9p', 'fuse.sshfs', 'lustre', 'gpfs', 'ocfs2', 'gfs2', 'beegfs']) {
      expect(isNetworkFsType(t), t).toBe(true);
    }
    for (const t of ['ext4', 'xfs', 'btrfs', 'tmpfs', 'overlay', 'zfs']) expect(isNetworkFsType(t), t).toBe(false);
  });

  it('auto is global on any evidence and says which; false stays local but reports the evidence; true is global', () => {
    const nfs = mountOf(entries, '/mnt/nfs/volumes');
    const local = mountOf(entries, '/var/lib/stowage');
    expect(decideSharing('auto', { ...none, mount: local })).toEqual({ scope: 'local', evidence: [] });
    expect(decideSharing('auto', { ...none, mount: nfs })).toEqual({
      scope: 'global', evidence: ['/mnt/nfs is a nfs4 mount (srv:/export)'],
    });
    expect(decideSharing('auto', { mount: local, otherNodes: ['node-b'], otherCreators: [] }).evidence)
      .toEqual(['the store holds records of other nodes: node-b']);
    expect(decideSharing('auto', { mount: undefined, otherNodes: [], otherCreators: ['n2', 'n3'] }))
      .toEqual({ scope: 'global', evidence: ['the store holds volumes created by other nodes: n2, n3'] });
    expect(decideSharing(false, { ...none, mount: nfs })).toMatchObject({ scope: 'local', evidence: [expect.stringMatching(/nfs4/)] });
    expect(decideSharing(true, { ...none, mount: local })).toEqual({ scope: 'global', evidence: [] });
  });

  it('skips malformed mountinfo lines', () => {
    expect(parseMountinfo('garbage\n1 2 3\n\n')).toEqual([]);
  });
});
