/**
 * Where no backup repository may be (own-storage.ts), on the default layout: the store is the
 * root's `volumes` directory, so the root contains it.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { OwnStorage, locate } from '../../../src/core/backup/own-storage.js';
import { parseMountinfo } from '../../../src/core/proc-mounts.js';

describe("stowage's own storage, with the store inside the root", () => {
  let base = '';
  afterEach(async () => { await rm(base, { recursive: true, force: true }); });

  it("allows a removed volume's kept snapshots in the store's snapshot repository, and nothing else there", async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-own-storage-'));
    const root = join(base, 'root');
    const store = join(root, 'volumes');
    await mkdir(join(store, '.stowage', 'snapshots'), { recursive: true });
    const own = new OwnStorage([root, ...OwnStorage.storeOf(join(store, '.stowage', 'cluster'))]);
    const kept = 'pg..removed-20261205T190000Z-a1b2c3';
    const outcome = (path: string, retained?: string) => own.assertOutside({ scheme: 'vfs', path }, 'the repository', retained)
      .then(() => 'allowed', (err: unknown) => (err as { code?: string }).code ?? String(err));
    expect(await outcome(join(store, '.stowage', 'snapshots'), kept)).toBe('allowed');
    expect(await outcome(join(store, '.stowage', 'snapshots'), 'pg')).toBe('E_INVALID_REQUEST');
    expect(await outcome(join(store, '.stowage', 'snapshots'))).toBe('E_INVALID_REQUEST');
    expect(await outcome(join(store, 'pg'), kept)).toBe('E_INVALID_REQUEST');
    expect(await outcome(join(root, 'elsewhere'), kept)).toBe('E_INVALID_REQUEST');
    expect(await outcome(join(base, 'backups'), kept)).toBe('allowed');
  });
});

describe('where a path lies, from mountinfo', () => {
  // Two FUSE mounts of gluster volume gv0 (through different servers, so different devices), one
  // of its subdirectory team, and another volume.
  const mounts = parseMountinfo([
    '22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw',
    '90 22 0:61 / /var/lib/stowage/glusterfs/mnt/gv0 rw,relatime shared:50 - fuse.glusterfs srv1:/gv0 rw,user_id=0',
    '91 22 0:62 / /mnt/gv rw,relatime shared:51 - fuse.glusterfs srv2.example:/gv0 rw,user_id=0',
    '92 22 0:63 / /mnt/team rw,relatime shared:52 - fuse.glusterfs srv1:/gv0/team rw,user_id=0',
    '93 22 0:64 / /mnt/other rw,relatime shared:53 - fuse.glusterfs srv1:/gv1 rw,user_id=0',
  ].join('\n'));

  it('names a GlusterFS volume by its name, whichever server and device a mount of it has', () => {
    const store = locate('/var/lib/stowage/glusterfs/mnt/gv0/.stowage/snapshots', mounts);
    expect(locate('/mnt/gv/.stowage/snapshots', mounts).fs).toEqual(store.fs);
    expect(store.fs).toEqual({ dev: 'glusterfs:gv0', path: '/.stowage/snapshots' });
    expect(locate('/mnt/team/pg', mounts).fs).toEqual({ dev: 'glusterfs:gv0', path: '/team/pg' });
    expect(locate('/mnt/other/.stowage/snapshots', mounts).fs).toEqual({ dev: 'glusterfs:gv1', path: '/.stowage/snapshots' });
    expect(locate('/srv/backups', mounts).fs).toEqual({ dev: '254:0', path: '/srv/backups' });
  });
});
