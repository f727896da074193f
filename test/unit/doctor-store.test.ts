/**
 * doctor's store check against the daemon's own start: the mount table and /etc/fstab are read
 * through the port, so memfs stands in for a host whose NFS mount, listed in fstab, did not come
 * up (as in new-shared-store.test.ts); each refusal is checked against a real init on the same files.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { VfsBackend } from '../../src/backends/vfs/vfs-backend.js';
import { parseVfsOptions } from '../../src/backends/vfs/vfs-options.js';
import { ExecaCommandRunner } from '../../src/core/command-runner.js';
import type { FsPort } from '../../src/core/fs-port.js';
import { silentLogger } from '../../src/core/logger.js';
import type { DaemonSettings } from '../../src/drivers/cli/daemon.js';
import type { DaemonState, DoctorContext } from '../../src/drivers/cli/doctor/check.js';
import { storeCheck, type StoreState } from '../../src/drivers/cli/doctor/store-check.js';
import { storePlanOf } from '../../src/drivers/cli/doctor/store-plan.js';
import { memFs } from '../helpers/memfs-stack.js';

const ROOT_MOUNT = '22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n';
const NFS_MOUNT = '40 22 0:50 / /mnt/nfs rw - nfs4 nas:/export rw\n';

/** A host with /mnt/nfs in /etc/fstab, mounted or not, and an empty directory there. */
async function host(mounted: boolean): Promise<FsPort> {
  const fs = memFs();
  await fs.mkdir('/proc/self', { recursive: true });
  await fs.writeFile('/proc/self/mountinfo', ROOT_MOUNT + (mounted ? NFS_MOUNT : ''));
  await fs.mkdir('/etc', { recursive: true });
  await fs.writeFile('/etc/fstab', 'nas:/export /mnt/nfs nfs defaults 0 0\n');
  await fs.mkdir('/mnt/nfs', { recursive: true });
  await fs.mkdir('/state', { recursive: true });
  return fs;
}

const settingsOf = (shared: string): DaemonSettings => ({
  backend: 'vfs', backendOptions: { 'vfs.path': '/mnt/nfs', 'vfs.shared': shared }, root: '/state', socket: '/run/none.sock', nodeId: 'here',
  onRemove: 'delete', dockerSocket: undefined, heartbeatMs: 5_000, staleAfterMs: 30_000, mountGraceMs: 60_000, reconcileMs: 60_000,
});

async function check(fs: FsPort, shared: string, daemon?: DaemonState): Promise<StoreState> {
  const settings = settingsOf(shared);
  const ctx: DoctorContext = { settings, fs, runner: new ExecaCommandRunner(), now: Date.now, daemon };
  const state = await storeCheck(ctx, storePlanOf(settings));
  expect(state).toBeDefined();
  return state!;
}

/** What the daemon's start says on the same files, or undefined when it starts. */
async function daemonStart(fs: FsPort, shared: string): Promise<string | undefined> {
  const backend = new VfsBackend({ nodeId: 'here', root: '/state', fs, runner: new ExecaCommandRunner(), log: silentLogger },
    parseVfsOptions({ 'vfs.path': '/mnt/nfs', 'vfs.shared': shared }, '/state'));
  return backend.init().then(() => undefined, (err: unknown) => (err instanceof Error ? err.message : String(err)));
}

const remember = (fs: FsPort, storeId: string) => fs.writeFile('/state/vfs-store.json', JSON.stringify({ path: '/mnt/nfs', storeId }));
async function plantMarker(fs: FsPort, storeId: string): Promise<void> {
  await fs.mkdir('/mnt/nfs/.stowage', { recursive: true });
  await fs.writeFile('/mnt/nfs/.stowage/store.json', JSON.stringify({ format: 1, storeId, createdAt: '2026-01-01T00:00:00.000Z', createdBy: 'here' }));
}

const ABSENT = 'no stowage store at /mnt/nfs (see the store check)';

describe('doctor: the vfs store at vfs.path', () => {
  it('fails where the daemon refuses a new shared store under an fstab mount point that is not mounted', async () => {
    const fs = await host(false);
    const problem = 'vfs.path /mnt/nfs is declared shared and holds no stowage store, and it lies under /mnt/nfs, a mount point in /etc/fstab that is not mounted';
    expect(await check(fs, 'true')).toEqual({
      result: { check: 'store', status: 'fail', message: `${problem} (the daemon refuses to start)`, advice: 'mount it (mount /mnt/nfs), then start stowage' },
      absent: ABSENT,
    });
    expect(await daemonStart(fs, 'true')).toBe(`${problem}: mount it (mount /mnt/nfs), then start stowage`);
  });

  it('warns where an undeclared store would be made on the disk under an unmounted fstab mount point', async () => {
    const fs = await host(false);
    expect(await check(fs, 'auto')).toEqual({
      result: {
        check: 'store', status: 'warn',
        message: 'vfs.path /mnt/nfs holds no stowage store yet and lies under /mnt/nfs, a mount point in /etc/fstab that is not mounted: ' +
          'the daemon makes a new store there, on the filesystem below it',
        advice: 'mount /mnt/nfs before starting stowage (declared vfs.shared=true, the daemon refuses to start without it)',
      },
      absent: ABSENT,
    });
  });

  it('fails where this node used a store at the path, naming the fstab mount point', async () => {
    const fs = await host(false);
    await remember(fs, 'a1b2c3d4e5f60718');
    const problem = 'vfs.path /mnt/nfs no longer holds stowage store a1b2c3d4e5f60718 that this node used before';
    for (const shared of ['auto', 'true', 'false']) {
      expect(await check(fs, shared)).toEqual({
        result: {
          check: 'store', status: 'fail', message: `${problem}; it lies under /mnt/nfs, a mount point in /etc/fstab that is not mounted (the daemon refuses to start)`,
          advice: 'mount its filesystem there, then start stowage; if the store is really gone, remove /state/vfs-store.json to start a new one',
        },
        absent: ABSENT,
      });
      expect(await daemonStart(fs, shared)).toMatch(new RegExp(`^${problem}; mount its filesystem there`));
    }
    // A running daemon that started on it is told apart: its operations fail now.
    const daemon: DaemonState = { info: { 'vfs.path': '/mnt/nfs', storeId: 'a1b2c3d4e5f60718' }, mounts: [] };
    expect((await check(fs, 'auto', daemon)).result.message).toMatch(/\(the running daemon refuses every volume operation, and would not start again\)$/);
  });

  it('is ok on the store this node used once mounted; fails when a running daemon started on another one', async () => {
    const fs = await host(true);
    await remember(fs, 'a1b2c3d4e5f60718');
    await plantMarker(fs, 'a1b2c3d4e5f60718');
    expect(await check(fs, 'true')).toEqual({
      result: { check: 'store', status: 'ok', message: 'stowage store a1b2c3d4e5f60718 at /mnt/nfs, the one this node used before' },
    });
    const daemon: DaemonState = { info: { 'vfs.path': '/mnt/nfs', storeId: 'ffff0000ffff0000' }, mounts: [] };
    expect((await check(fs, 'true', daemon)).result).toEqual({
      check: 'store', status: 'fail',
      message: 'the running daemon started on stowage store ffff0000ffff0000, but /mnt/nfs now holds store a1b2c3d4e5f60718: it refuses every volume operation',
      advice: 'check what is mounted there and mount the store again, then restart stowage',
    });
    expect(await daemonStart(fs, 'true')).toBeUndefined();
    expect(JSON.parse(String(await fs.readFile(join('/state', 'vfs-store.json'), 'utf8')))).toEqual({ path: '/mnt/nfs', storeId: 'a1b2c3d4e5f60718' });
  });

  it('fails on a node memory or store marker the daemon cannot read, as its start does', async () => {
    const fs = await host(true);
    await fs.writeFile('/state/vfs-store.json', '{"path": ');
    const memory = await check(fs, 'auto');
    expect(memory.result).toMatchObject({
      status: 'fail', message: expect.stringMatching(/^this node's memory of its store cannot be read: .*\/state\/vfs-store\.json/),
      advice: 'the daemon refuses to start so: remove /state/vfs-store.json (the daemon writes it again)',
    });
    expect(await daemonStart(fs, 'auto')).toMatch(/\/state\/vfs-store\.json/);
    await fs.rm('/state/vfs-store.json');
    await fs.mkdir('/mnt/nfs/.stowage');
    await fs.writeFile('/mnt/nfs/.stowage/store.json', '{"format": 1}');
    expect((await check(fs, 'auto')).result).toMatchObject({
      status: 'fail', message: expect.stringMatching(/store marker \/mnt\/nfs\/\.stowage\/store\.json/),
      advice: 'the daemon refuses to start on it: check what is mounted there, or restore the marker',
    });
    expect(await daemonStart(fs, 'auto')).toMatch(/store marker \/mnt\/nfs\/\.stowage\/store\.json/);
  });
});
