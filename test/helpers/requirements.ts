/**
 * Gates for test suites that need real system components (a Docker engine,
 * glusterd, ...). Locally a missing component skips the suite loudly; in CI
 * (`STOWAGE_TEST_REQUIRE=1`, set by `.ci/run`) it fails the suite instead, so
 * a broken install can never turn into a silently green run.
 */
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readSync } from 'node:fs';
import { tmpdir } from 'node:os';

export interface ComponentCheck {
  ok: boolean;
  why?: string;
}

export const requireSystemComponents: boolean = process.env.STOWAGE_TEST_REQUIRE === '1';

/** Absolute path of an executable found on PATH, or undefined. */
export function findExecutable(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this PATH entry
    }
  }
  return undefined;
}

export function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * What `test/helpers/docker-node.ts` needs: the engine, its CLI, the
 * util-linux namespace tools (setpriv ties helper processes to the test
 * process's life), a static busybox for the test image, and root (mount
 * namespaces and dockerd both need it).
 */
export function checkDocker(): ComponentCheck {
  const missing = ['dockerd', 'docker', 'unshare', 'nsenter', 'setpriv'].filter(
    (tool) => findExecutable(tool) === undefined,
  );
  if (!isExecutable('/bin/busybox')) missing.push('/bin/busybox');
  if (missing.length > 0) {
    return {
      ok: false,
      why: `missing ${missing.join(', ')} (apt-get install -y docker.io busybox-static util-linux)`,
    };
  }
  if (process.getuid?.() !== 0) {
    return { ok: false, why: 'not running as root (private mount namespaces and dockerd need root)' };
  }
  return { ok: true };
}

/**
 * Decide whether a suite needing `component` must be skipped.
 *
 * Usage: `const skip = systemSuite('docker', checkDocker()); describe.skipIf(skip)(...)`.
 * Throws (failing the file at collection time) when the component is missing
 * and `STOWAGE_TEST_REQUIRE=1`.
 */
export function systemSuite(component: string, check: ComponentCheck): boolean {
  if (check.ok) return false;
  const why = check.why ?? 'requirement not met';
  if (requireSystemComponents) {
    throw new Error(
      `[stowage tests] ${component} tests cannot run: ${why}. STOWAGE_TEST_REQUIRE=1 makes this a failure.`,
    );
  }
  process.stderr.write(
    `\n[stowage tests] SKIPPING ${component} tests: ${why}. Set STOWAGE_TEST_REQUIRE=1 to make this a failure.\n\n`,
  );
  return true;
}

/**
 * What `test/helpers/glusterd.ts` and the glusterfs backend tests need: the gluster server and
 * client tools, FUSE, util-linux's setpriv (glusterd dies with the test process), the packaged
 * glusterd.vol the harness copies, and root (glusterd, bricks and FUSE mounts need it).
 */
export function checkGluster(): ComponentCheck {
  const missing = ['glusterd', 'glusterfsd', 'glusterfs', 'gluster', 'mount.glusterfs', 'setpriv', 'umount'].filter(
    (tool) => findExecutable(tool) === undefined && !isExecutable(`/usr/sbin/${tool}`) && !isExecutable(`/sbin/${tool}`),
  );
  try {
    accessSync('/etc/glusterfs/glusterd.vol', constants.R_OK);
  } catch {
    missing.push('/etc/glusterfs/glusterd.vol');
  }
  if (missing.length > 0) {
    return { ok: false, why: `missing ${missing.join(', ')} (apt-get install -y glusterfs-server glusterfs-client util-linux)` };
  }
  try {
    accessSync('/dev/fuse', constants.R_OK | constants.W_OK);
  } catch {
    return { ok: false, why: '/dev/fuse is not available (FUSE mounts of gluster volumes need it)' };
  }
  if (process.getuid?.() !== 0) {
    return { ok: false, why: 'not running as root (glusterd, its bricks and FUSE mounts need root)' };
  }
  return { ok: true };
}

/** True for an ELF binary without a program interpreter (ld-linux): usable in an initramfs. */
function isStaticBinary(path: string): boolean {
  try {
    const fd = openSync(path, 'r');
    try {
      const head = Buffer.alloc(8192);
      const read = readSync(fd, head, 0, head.length, 0);
      return head.subarray(0, 4).toString('latin1') === '\x7fELF' && !head.subarray(0, read).includes('ld-linux');
    } finally {
      closeSync(fd);
    }
  } catch {
    return false;
  }
}

/**
 * What the device-mapper test VM (test/vm/dm-vm.ts) needs: qemu (software emulation, no KVM),
 * the host tools the guest runs (dmsetup, thin tools, losetup, mkfs), a static busybox for the
 * initramfs, Debian's kernel package from `apt-get download` (package lists present, or an
 * image already cached under the temp dir), and root (the host root is shared over 9p).
 */
export function checkDmVm(): ComponentCheck {
  const found = (tool: string) => findExecutable(tool) !== undefined || isExecutable(`/usr/sbin/${tool}`) || isExecutable(`/sbin/${tool}`);
  const missing = ['qemu-system-x86_64', 'dmsetup', 'thin_check', 'thin_delta', 'losetup', 'blockdev', 'mkfs.ext4', 'mkfs.xfs',
    'apt-get', 'apt-cache', 'dpkg-deb', 'gzip'].filter((tool) => !found(tool));
  if (!isStaticBinary('/bin/busybox')) missing.push('/bin/busybox (static)');
  if (missing.length > 0) {
    return {
      ok: false,
      why: `missing ${missing.join(', ')} (apt-get install -y qemu-system-x86 thin-provisioning-tools dmsetup busybox-static xfsprogs)`,
    };
  }
  if (process.getuid?.() !== 0) {
    return { ok: false, why: 'not running as root (the VM shares the host root over 9p and the guest runs dmsetup as root)' };
  }
  const cached = existsSync(join(tmpdir(), 'stowage-dmvm'));
  const kernel = spawnSync('apt-cache', ['depends', 'linux-image-amd64'], { encoding: 'utf8', timeout: 30_000 });
  if (!/Depends: linux-image-\d/.test(kernel.stdout ?? '') && !cached) {
    return { ok: false, why: 'apt-cache knows no linux-image-amd64 package to download the VM kernel from (run apt-get update)' };
  }
  return { ok: true };
}

/**
 * What test/helpers/s3-server.ts needs for its Ceph radosgw: the monitor, OSD and gateway
 * daemons and the admin tools (no root: every daemon runs as the test user on 127.0.0.1).
 */
export function checkS3Server(): ComponentCheck {
  const missing = ['ceph-mon', 'ceph-osd', 'radosgw', 'radosgw-admin', 'ceph', 'ceph-authtool', 'monmaptool']
    .filter((tool) => findExecutable(tool) === undefined && !isExecutable(`/usr/bin/${tool}`));
  if (missing.length > 0) {
    return { ok: false, why: `missing ${missing.join(', ')} (apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw ceph-common)` };
  }
  return { ok: true };
}

/** A suite that runs a child in a mount namespace of its own (`unshare --mount`): root and util-linux's unshare. */
export function mountNamespaceSuite(component: string): boolean {
  return systemSuite(component, process.getuid?.() === 0 && findExecutable('unshare')
    ? { ok: true } : { ok: false, why: 'needs root and unshare (util-linux)' });
}
