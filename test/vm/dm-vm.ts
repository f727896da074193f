/**
 * stowage's device-mapper test VM, host side: Debian's generic kernel (fetched with
 * `apt-get download`, never installed) booted under qemu with software emulation (TCG), the
 * host's root shared read-only over 9p and a work dir shared read-write at the same path. The
 * guest runs the host's own dmsetup, thin tools, mkfs and node (see init and guest-run.sh).
 *
 * The kernel + initramfs build is cached under os.tmpdir()/stowage-dmvm/, keyed by the kernel
 * package, its version and the contents of the scripts that make the image.
 */
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { createWriteStream, existsSync, readFileSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';

export const VM_DIR = dirname(fileURLToPath(import.meta.url));
/** The checkout: shared read-only at its own path, since the guest's fresh /tmp and /run would hide a checkout there. */
export const REPO_ROOT = dirname(dirname(VM_DIR));
export const GUEST_RUNNER = join(VM_DIR, 'guest-run.sh');

export interface KernelPackage {
  name: string;
  version: string;
}

export interface VmImage {
  dir: string;
  kernel: string;
  initramfs: string;
  kernelVersion: string;
}

/** The Debian kernel package linux-image-amd64 points at now, or undefined without apt lists. */
export function currentKernelPackage(): KernelPackage | undefined {
  const depends = spawnSync('apt-cache', ['depends', 'linux-image-amd64'], { encoding: 'utf8', timeout: 30_000 });
  const name = /Depends: (linux-image-\d\S*-amd64)\s*$/m.exec(depends.stdout ?? '')?.[1];
  if (!name) return undefined;
  const show = spawnSync('apt-cache', ['show', '--no-all-versions', name], { encoding: 'utf8', timeout: 30_000 });
  const version = /^Version: (\S+)$/m.exec(show.stdout ?? '')?.[1];
  return version ? { name, version } : undefined;
}

function imageKey(pkg: KernelPackage): string {
  const hash = createHash('sha256');
  for (const file of ['init', 'build-initramfs.sh']) hash.update(readFileSync(join(VM_DIR, file)));
  hash.update(`${pkg.name}=${pkg.version}`);
  return `${pkg.name}_${pkg.version}_${hash.digest('hex').slice(0, 12)}`.replace(/[^A-Za-z0-9_.+-]/g, '_');
}

export const IMAGE_CACHE = join(tmpdir(), 'stowage-dmvm');

function imageIn(dir: string): VmImage | undefined {
  const kernel = join(dir, 'vmlinuz');
  const initramfs = join(dir, 'initramfs.cpio.gz');
  const versionFile = join(dir, 'kernel-version');
  if (!existsSync(kernel) || !existsSync(initramfs) || !existsSync(versionFile)) return undefined;
  return { dir, kernel, initramfs, kernelVersion: readFileSync(versionFile, 'utf8').trim() };
}

/** The cached image for the current kernel package, built (about 10 s plus the download) if missing. */
export async function ensureVmImage(log: (line: string) => void = () => undefined): Promise<VmImage> {
  const pkg = currentKernelPackage();
  if (!pkg) throw new Error('apt-cache knows no linux-image-amd64 package; run apt-get update first');
  const dir = join(IMAGE_CACHE, imageKey(pkg));
  const cached = imageIn(dir);
  if (cached) {
    log(`dm VM: reusing kernel ${cached.kernelVersion} and initramfs from ${dir}`);
    return cached;
  }
  const building = `${dir}.build-${process.pid}`;
  await rm(building, { recursive: true, force: true });
  await mkdir(IMAGE_CACHE, { recursive: true });
  log(`dm VM: building kernel + initramfs from ${pkg.name} ${pkg.version} in ${dir}`);
  const result = await execa(join(VM_DIR, 'build-initramfs.sh'), [pkg.name, building], { reject: false, timeout: 600_000 });
  if (result.exitCode !== 0) {
    await rm(building, { recursive: true, force: true });
    throw new Error(`building the VM image failed (exit ${result.exitCode}):\n${result.stdout}\n${result.stderr}`);
  }
  // Another test run may have finished the same build meanwhile; either copy is good.
  await rename(building, dir).catch(() => rm(building, { recursive: true, force: true }));
  const image = imageIn(dir);
  if (!image) throw new Error(`the VM image build left no kernel/initramfs in ${dir}`);
  return image;
}

export interface VmRunOptions {
  image: VmImage;
  /** Host directory shared read-write, mounted at the same path in the guest; the command's cwd. */
  work: string;
  /** Executable to run in the guest (a path inside the host root, seen read-only). */
  command: string;
  timeoutMs: number;
  memoryMb?: number;
  /** Called with every console line (for progress output). */
  onLine?: (line: string) => void;
}

export interface VmRun {
  /** The guest command's exit code from the `DMVM_EXIT rc=N` marker; undefined if it never came. */
  exitCode: number | undefined;
  timedOut: boolean;
  /** The serial console, also in WORK/serial.log. */
  console: string;
  seconds: number;
}

/** Boots the VM once, runs `command`, and returns when the guest powered off (or the timeout hit). */
export async function runInVm(options: VmRunOptions): Promise<VmRun> {
  for (const path of [options.work, options.command, REPO_ROOT]) {
    if (/[\s"'\\]/.test(path)) throw new Error(`VM paths must not contain spaces or quotes: ${JSON.stringify(path)}`);
  }
  const started = Date.now();
  const log = createWriteStream(join(options.work, 'serial.log'));
  const smp = Math.max(1, Math.min(cpus().length, 4));
  const child = execa('qemu-system-x86_64', [
    '-name', 'stowage-dmvm', '-accel', 'tcg,thread=multi', '-cpu', 'max',
    '-m', String(options.memoryMb ?? 1536), '-smp', String(smp),
    '-kernel', options.image.kernel, '-initrd', options.image.initramfs,
    '-append', `console=ttyS0 quiet loglevel=4 panic=-1 dmvm.work=${options.work} dmvm.cmd=${options.command} dmvm.repo=${REPO_ROOT}`,
    '-virtfs', 'local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap',
    '-virtfs', `local,path=${REPO_ROOT},mount_tag=repo,security_model=passthrough,readonly=on,multidevs=remap`,
    '-virtfs', `local,path=${options.work},mount_tag=work,security_model=passthrough,multidevs=remap`,
    '-nic', 'none', '-display', 'none', '-monitor', 'none', '-serial', 'stdio', '-no-reboot',
  ], { reject: false, timeout: options.timeoutMs, forceKillAfterDelay: 5_000, stdin: 'ignore', buffer: false, all: true });
  let text = '';
  let partial = '';
  child.all?.on('data', (chunk: Buffer) => {
    const s = chunk.toString('utf8');
    text += s;
    log.write(s);
    const lines = (partial + s).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) options.onLine?.(line.replace(/\r$/, ''));
  });
  const result = await child;
  await new Promise<void>((resolve) => log.end(resolve));
  const marker = /DMVM_EXIT rc=(\d+)/.exec(text);
  return {
    exitCode: marker ? Number(marker[1]) : undefined,
    timedOut: result.timedOut === true,
    console: text,
    seconds: (Date.now() - started) / 1000,
  };
}
