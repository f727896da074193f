/**
 * A store declared shared whose filesystem did not come up is an empty directory on the local
 * disk: a new store made there is one no other node sees. The check reads the mount table and
 * /etc/fstab through the port, so memfs stands in for a host with an NFS mount listed but not
 * mounted; the warning for a plain local directory runs on the real filesystem.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkNewSharedStore, fstabMountPoints } from '../../src/backends/vfs/store-layout.js';
import { ErrorCodes } from '../../src/core/errors.js';
import { asFsPort, LocalFirstFs } from '../../src/core/local-fs.js';
import { memoryLogger } from '../helpers/memory-logger.js';
import { memFs } from '../helpers/memfs-stack.js';

const MOUNTINFO = '22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n';

describe('a new store at a path declared shared', () => {
  it('reads mount points from /etc/fstab, escapes decoded, comments, swap and / left out', () => {
    expect(fstabMountPoints([
      '# <file system> <mount point> <type>', '/dev/vda / ext4 defaults 0 1', 'UUID=x none swap sw 0 0',
      'nas:/export /mnt/shared\\040data nfs defaults 0 0', '  server:/gv0   /srv/gluster glusterfs defaults,_netdev 0 0', '',
    ].join('\n'))).toEqual(['/mnt/shared data', '/srv/gluster']);
  });

  it('is refused under an fstab mount point that is not mounted, naming it', async () => {
    const fs = memFs();
    await fs.mkdir('/proc/self', { recursive: true });
    await fs.writeFile('/proc/self/mountinfo', MOUNTINFO);
    await fs.mkdir('/etc', { recursive: true });
    await fs.writeFile('/etc/fstab', 'nas:/export /mnt/nfs nfs defaults 0 0\n');
    const log = memoryLogger();
    for (const path of ['/mnt/nfs', '/mnt/nfs/stowage']) {
      await expect(checkNewSharedStore(fs, path, log)).rejects.toMatchObject({
        code: ErrorCodes.BACKEND_UNAVAILABLE,
        message: expect.stringMatching(/lies under \/mnt\/nfs, a mount point in \/etc\/fstab that is not mounted: mount it \(mount \/mnt\/nfs\)/),
      });
    }
    // Once it is mounted, or for a path under no listed mount point, nothing is said.
    await fs.writeFile('/proc/self/mountinfo', `${MOUNTINFO}40 22 0:50 / /mnt/nfs rw - nfs4 nas:/export rw\n`);
    await checkNewSharedStore(fs, '/mnt/nfs/stowage', log);
    await checkNewSharedStore(fs, '/srv/other', log);
    expect(log.lines).toEqual([]);
  });

  it('is made with a warning in a plain directory of a local filesystem', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'stowage-new-shared-'));
    try {
      const log = memoryLogger();
      await checkNewSharedStore(asFsPort(new LocalFirstFs()), dir, log);
      expect(log.lines).toEqual([expect.stringMatching(/is declared shared but is a plain directory of a local filesystem .*a new store is made here, which other nodes do not see/)]);
    } finally {
      await rm(dir, { recursive: true });
    }
  });
});
