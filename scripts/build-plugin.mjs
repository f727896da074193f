// Builds the managed (v2) Docker plugin without a registry: build/plugin/config.json plus a rootfs
// made of this host's own binaries and the libraries ldd names for them, then (unless
// --build-only) `docker plugin create NAME build/plugin` on the engine DOCKER_HOST names.
//
//   node scripts/build-plugin.mjs [--build-only] [--name stowage] [--out build/plugin]
//
// Needs: node (the one running this), static busybox, util-linux mount, and, for the backends
// that use them, dmsetup, thin-provisioning-tools, e2fsprogs, xfsprogs, glusterfs-client, and attr
// (getfattr, setfattr) for backups' extended attributes.
// A tool that is missing is left out with a warning (its backend then fails with a clear error).
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, cpSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync,
  symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const value = (name, fallback) => {
  const i = args.indexOf(name);
  if (i === -1) return fallback;
  const v = args[i + 1];
  if (v === undefined || v.startsWith('--')) fail(`${name} needs a value`);
  return v;
};
function fail(message) {
  process.stderr.write(`build-plugin: ${message}\n`);
  process.exit(1);
}
for (const a of args) {
  if (a.startsWith('--') && !['--build-only', '--name', '--out', '--help'].includes(a)) fail(`unknown flag ${a}`);
}
if (flag('--help')) {
  process.stdout.write('usage: node scripts/build-plugin.mjs [--build-only] [--name NAME] [--out DIR]\n');
  process.exit(0);
}
const name = value('--name', 'stowage');
if (!/^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]+)?$/.test(name)) fail(`invalid plugin name ${JSON.stringify(name)}`);
const out = resolve(value('--out', join(repo, 'build/plugin')));
const rootfs = join(out, 'rootfs');
const started = Date.now();

const bundle = join(repo, 'dist/bin/stowage.mjs');
if (!existsSync(bundle)) fail(`${bundle} is missing: run npm run build first`);

rmSync(out, { recursive: true, force: true });
mkdirSync(rootfs, { recursive: true });

// The host's merged-/usr links, so paths ldd prints (/lib/...) land where the host has them.
for (const top of ['bin', 'sbin', 'lib', 'lib64']) {
  const host = `/${top}`;
  if (existsSync(host) && lstatSync(host).isSymbolicLink()) {
    const target = readlinkSync(host);
    mkdirSync(resolve(rootfs, target.replace(/^\//, '')), { recursive: true });
    symlinkSync(target, join(rootfs, top));
  }
  else mkdirSync(join(rootfs, 'usr', top), { recursive: true });
}
for (const dir of ['usr/bin', 'usr/sbin', 'usr/lib', 'etc', 'tmp', 'var/tmp', 'var/log/glusterfs', 'var/run/gluster', 'var/lib/glusterd',
  'var/lib/stowage', 'mnt/stowage', 'run/docker/plugins', 'run/docker-host', 'proc', 'sys', 'dev', 'root', 'opt/stowage/dist/bin']) {
  mkdirSync(join(rootfs, dir), { recursive: true });
}
chmodSync(join(rootfs, 'tmp'), 0o1777);
chmodSync(join(rootfs, 'var/tmp'), 0o1777);

const copied = new Set();
/** Copies a host path to the same path in the rootfs; symlinks stay links and their targets come too. */
function copyPath(path) {
  if (copied.has(path)) return;
  copied.add(path);
  const st = lstatSync(path);
  const dest = join(rootfs, path);
  mkdirSync(dirname(dest), { recursive: true });
  if (st.isSymbolicLink()) {
    const link = readlinkSync(path);
    if (!existsSync(dest)) symlinkSync(link, dest);
    copyPath(resolve(dirname(path), link));
  } else if (st.isDirectory()) {
    mkdirSync(dest, { recursive: true });
    for (const entry of readdirSync(path)) copyPath(join(path, entry));
  } else if (st.isFile()) {
    copyFileSync(path, dest);
    chmodSync(dest, st.mode & 0o7777);
    if (isElf(path)) for (const lib of librariesOf(path)) copyPath(lib);
  }
}

function isElf(path) {
  const buf = readFileSync(path, { flag: 'r' }).subarray(0, 4);
  return buf.length === 4 && buf[0] === 0x7f && buf.toString('latin1', 1, 4) === 'ELF';
}

/** Absolute library paths ldd names (none for static binaries). */
function librariesOf(path) {
  let text;
  try {
    text = execFileSync('ldd', [path], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return []; // "not a dynamic executable"
  }
  const libs = [];
  for (const line of text.split('\n')) {
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line);
    if (m) libs.push(m[1]);
  }
  return libs;
}

function which(program) {
  for (const dir of ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']) {
    const p = join(dir, program);
    if (existsSync(p)) return p;
  }
  return undefined;
}

const missing = [];
const tool = (program, required = false) => {
  const path = which(program);
  if (path === undefined) {
    if (required) fail(`${program} not found on this host`);
    missing.push(program);
    return;
  }
  copyPath(path);
};

// Node: the binary running this script, at the path the entrypoint names.
copyFileSync(process.execPath, join(rootfs, 'usr/bin/node'));
chmodSync(join(rootfs, 'usr/bin/node'), 0o755);
for (const lib of librariesOf(process.execPath)) copyPath(lib);

// Static busybox: the shell mount.glusterfs needs and the usual applets, where no real tool is.
const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p));
if (busybox === undefined || librariesOf(busybox).length > 0) fail('a static busybox is needed (Debian: busybox-static)');
copyFileSync(busybox, join(rootfs, 'usr/bin/busybox'));
chmodSync(join(rootfs, 'usr/bin/busybox'), 0o755);

for (const program of ['mount', 'umount']) tool(program, true);
for (const program of ['dmsetup', 'thin_check', 'thin_delta', 'thin_dump', 'thin_restore', 'thin_repair', 'thin_ls', 'thin_trim',
  'thin_metadata_size', 'thin_rmap', 'mkfs.ext4', 'mke2fs', 'e2fsck', 'resize2fs', 'mkfs.xfs', 'xfs_growfs', 'mount.glusterfs',
  'glusterfs', 'glusterfsd', 'fusermount-glusterfs', 'blkid', 'getfattr', 'setfattr']) {
  tool(program);
}
// GlusterFS loads its translators with dlopen: ldd of the client does not name them.
for (const dir of ['/usr/lib/x86_64-linux-gnu/glusterfs', '/usr/lib64/glusterfs', '/usr/lib/glusterfs']) {
  if (!existsSync(dir)) continue;
  for (const version of readdirSync(dir)) {
    for (const sub of ['xlator', 'rpc-transport', 'auth']) {
      const p = join(dir, version, sub);
      if (existsSync(p)) copyPath(p);
    }
  }
}
if (existsSync('/etc/mke2fs.conf')) copyPath('/etc/mke2fs.conf');

const applets = execFileSync(busybox, ['--list'], { encoding: 'utf8' }).split('\n').filter((a) => a !== '' && a !== 'busybox');
for (const applet of applets) {
  const link = join(rootfs, 'usr/bin', applet);
  if (!existsSync(link) && !existsSync(join(rootfs, 'usr/sbin', applet))) symlinkSync('busybox', link);
}

// The bundled CLI (its entry and the chunks it loads on demand) and the package.json it reads its version from.
cpSync(dirname(bundle), join(rootfs, 'opt/stowage/dist/bin'), { recursive: true });
const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8'));
writeFileSync(join(rootfs, 'opt/stowage/package.json'), `${JSON.stringify({ name: pkg.name, version: pkg.version, type: 'module' }, null, 2)}\n`);

writeFileSync(join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n');
writeFileSync(join(rootfs, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
// Bind-mount targets: the engine mounts the host's files over them.
for (const file of ['etc/hosts', 'etc/resolv.conf', 'etc/hostname']) writeFileSync(join(rootfs, file), '');
if (!existsSync(join(rootfs, 'etc/mtab'))) symlinkSync('/proc/self/mounts', join(rootfs, 'etc/mtab'));

copyFileSync(join(repo, 'plugin/config.json'), join(out, 'config.json'));

const bytes = Number(execFileSync('du', ['-sb', rootfs], { encoding: 'utf8' }).split(/\s/)[0]);
process.stdout.write(`build-plugin: ${out} built in ${Date.now() - started} ms, rootfs ${(bytes / 1048576).toFixed(1)} MiB` +
  `${missing.length > 0 ? `; not on this host, left out: ${missing.join(', ')}` : ''}\n`);

if (!flag('--build-only')) {
  const t0 = Date.now();
  try {
    execFileSync('docker', ['plugin', 'create', name, out], { stdio: 'inherit' });
  } catch {
    fail(`docker plugin create ${name} ${out} failed (an existing plugin of that name: docker plugin disable ${name} && docker plugin rm ${name})`);
  }
  process.stdout.write(`build-plugin: plugin ${name} created in ${Date.now() - t0} ms (disabled); set options with docker plugin set, then docker plugin enable ${name}\n`);
}
