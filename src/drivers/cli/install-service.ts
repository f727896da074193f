/**
 * `stowage install-service`: puts the systemd units shipped in the package (systemd/) in place,
 * pointed at this installation, and the EnvironmentFile only where none exists yet.
 */
import { constants } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError, type Command } from 'commander';
import { ErrorCodes, StowageError, errnoCode } from '../../core/errors.js';
import { DEFAULT_SOCKET } from '../server.js';

export const DEFAULT_UNIT_DIR = '/etc/systemd/system';
export const DEFAULT_ENV_FILE = '/etc/stowage/stowage.env';
const UNITS = ['stowage.socket', 'stowage.service'] as const;
/** Longest unix socket path Linux takes (sun_path is 108 bytes with its terminating NUL). */
const MAX_SOCKET_PATH = 107;

/**
 * Characters a path may hold to go into a unit file unquoted: systemd splits ExecStart= on
 * spaces and expands `%` specifiers and `$` variables in it.
 */
const UNIT_SAFE_PATH = /^\/[A-Za-z0-9/._+@-]*$/;

function unitPath(value: string, what: string): string {
  if (!isAbsolute(value)) throw new InvalidArgumentError(`${what} must be an absolute path`);
  const path = resolve(value);
  if (!UNIT_SAFE_PATH.test(path)) {
    throw new InvalidArgumentError(`${what} may hold only letters, digits and / . _ + @ - (systemd would split or expand others)`);
  }
  return path;
}

export interface InstallServiceOptions {
  /** Where the units go. @default /etc/systemd/system */
  dest: string;
  /** The command ExecStart runs, as argv (absolute paths). */
  execStart: string[];
  envFile: string;
  socket: string;
  /** The package's systemd/ directory, holding the units and stowage.env. */
  templates: string;
}

export interface InstallReport {
  written: string[];
  unchanged: string[];
  /** Units that differed from what is written now (edited, or an older version's), each with where it was kept. */
  replaced: Array<{ path: string; keptAt: string }>;
  /** The env file, when one was already there and left alone. */
  keptEnvFile?: string;
}

/** Replaces the one `KEY=` line of a unit; the shipped units have exactly one of each. */
function setKey(text: string, key: string, value: string, unit: string): string {
  const pattern = new RegExp(`^${key}=.*$`, 'm');
  if (!pattern.test(text)) throw new StowageError(ErrorCodes.INVALID_OPTION, `the shipped ${unit} has no ${key}= line; reinstall stowage`);
  return text.replace(pattern, `${key}=${value}`);
}

export function renderUnits(templates: Record<(typeof UNITS)[number], string>, opts: Omit<InstallServiceOptions, 'dest' | 'templates'>): Record<string, string> {
  let service = setKey(templates['stowage.service'], 'ExecStart', opts.execStart.join(' '), 'stowage.service');
  service = setKey(service, 'EnvironmentFile', `-${opts.envFile}`, 'stowage.service');
  if (opts.socket !== DEFAULT_SOCKET) {
    // The daemon checks that the socket systemd passes is the one it was told to serve.
    service = service.replace(/^EnvironmentFile=/m, `Environment=STOWAGE_SOCKET=${opts.socket}\nEnvironmentFile=`);
  }
  const socket = setKey(templates['stowage.socket'], 'ListenStream', opts.socket, 'stowage.socket');
  return { 'stowage.socket': socket, 'stowage.service': service };
}

/**
 * The settings file as shipped, its commented socket line showing the socket the units were
 * written for: uncommented as it stands, it must name the socket systemd binds, or the daemon
 * refuses to start.
 */
export function renderEnvFile(template: string, socket: string): string {
  return template.replace(/^#STOWAGE_SOCKET=.*$/m, `#STOWAGE_SOCKET=${socket}`);
}

/** Write to a temporary file beside the target, flush, rename: a reader sees the old file or the new one. */
async function writeAtomically(path: string, text: string, mode: number): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  const handle = await fsp.open(tmp, 'wx', mode);
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fsp.rename(tmp, path).catch(async (err: unknown) => {
    await fsp.unlink(tmp).catch(() => undefined);
    throw err;
  });
}

async function readIfExists(path: string): Promise<string | undefined> {
  return fsp.readFile(path, 'utf8').catch((err: unknown) => {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  });
}

async function checkDirectory(path: string, what: string): Promise<void> {
  const stat = await fsp.stat(path).catch(() => undefined);
  if (!stat?.isDirectory()) throw new StowageError(ErrorCodes.INVALID_OPTION, `${what} ${path} is not an existing directory`);
}

async function checkExecutable(path: string, what: string): Promise<void> {
  const stat = await fsp.stat(path).catch(() => undefined);
  if (!stat?.isFile()) throw new StowageError(ErrorCodes.INVALID_OPTION, `${what} ${path} is not a file`);
  // access(X_OK) alone passes any file for root when the filesystem ignores modes.
  const executable = (stat.mode & 0o111) !== 0 && (await fsp.access(path, constants.X_OK).then(() => true, () => false));
  if (!executable) throw new StowageError(ErrorCodes.INVALID_OPTION, `${what} ${path} is not executable`);
}

export async function installService(opts: InstallServiceOptions): Promise<InstallReport> {
  // Everything is checked before anything is written.
  await checkDirectory(opts.dest, '--dest');
  for (const program of opts.execStart.filter((arg) => arg.startsWith('/'))) await checkExecutable(program, 'ExecStart program');
  const envExisting = await fsp.lstat(opts.envFile).catch((err: unknown) => {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  });
  if (envExisting && !envExisting.isFile()) {
    throw new StowageError(ErrorCodes.INVALID_OPTION, `--environment-file ${opts.envFile} exists and is not a regular file`);
  }
  for (const name of UNITS) {
    const existing = await fsp.lstat(join(opts.dest, name)).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw err;
    });
    if (existing && !existing.isFile()) {
      throw new StowageError(ErrorCodes.INVALID_OPTION, `${join(opts.dest, name)} exists and is not a regular file (a symlink or a directory); move it away first`);
    }
  }
  const templates = {
    'stowage.socket': await fsp.readFile(join(opts.templates, 'stowage.socket'), 'utf8'),
    'stowage.service': await fsp.readFile(join(opts.templates, 'stowage.service'), 'utf8'),
  };
  const units = renderUnits(templates, opts);

  const report: InstallReport = { written: [], unchanged: [], replaced: [] };
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  for (const name of UNITS) {
    const path = join(opts.dest, name);
    const before = await readIfExists(path);
    if (before === units[name]) {
      report.unchanged.push(path);
      continue;
    }
    if (before !== undefined) {
      // Edited by hand, or written by an older version: kept beside it, never lost.
      const keptAt = `${path}.bak-${stamp}`;
      await writeAtomically(keptAt, before, 0o644);
      report.replaced.push({ path, keptAt });
    }
    await writeAtomically(path, units[name]!, 0o644);
    report.written.push(path);
  }
  if (envExisting) {
    report.keptEnvFile = opts.envFile;
  } else {
    await fsp.mkdir(dirname(opts.envFile), { recursive: true, mode: 0o755 });
    // Backend options may carry credentials: root only.
    await writeAtomically(opts.envFile, renderEnvFile(await fsp.readFile(join(opts.templates, 'stowage.env'), 'utf8'), opts.socket), 0o600);
    report.written.push(opts.envFile);
  }
  return report;
}

/** The package's root: this code runs as dist/bin/stowage.mjs (bundled) or dist/src/drivers/cli/*.js. */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!dir.endsWith('/dist') && dir !== '/') dir = dirname(dir);
  return dirname(dir);
}

export function addInstallServiceCommand(program: Command, socketOf: (cmd: Command) => string): void {
  program.command('install-service')
    .description('install the systemd units (socket activation) and, if absent, the settings file')
    .option('--dest <dir>', 'directory for stowage.socket and stowage.service (the units only: the settings file goes to --environment-file)', DEFAULT_UNIT_DIR)
    .option('--bin <path>', 'the stowage program ExecStart runs (default: this node running this stowage)')
    // Not --env-file: Node 20 takes that flag for itself wherever it appears in argv.
    .option('--environment-file <path>', 'the EnvironmentFile the service reads; written only if it does not exist', DEFAULT_ENV_FILE)
    .action(async (flags: { dest: string; bin?: string; environmentFile: string }, cmd: Command) => {
      const dest = unitPath(flags.dest, '--dest');
      const envFile = unitPath(flags.environmentFile, '--environment-file');
      const socket = unitPath(socketOf(cmd), '--socket');
      if (Buffer.byteLength(socket) > MAX_SOCKET_PATH) {
        throw new InvalidArgumentError(`--socket ${socket} is ${Buffer.byteLength(socket)} bytes; a unix socket's path holds at most ${MAX_SOCKET_PATH}`);
      }
      // Without --bin, the exact node and script running now: systemd's PATH may not hold either.
      const execStart = flags.bin !== undefined
        ? [unitPath(flags.bin, '--bin'), 'daemon']
        : [unitPath(process.execPath, 'the node binary'), unitPath(await fsp.realpath(process.argv[1]!), 'the stowage script'), 'daemon'];
      const report = await installService({ dest, execStart, envFile, socket, templates: join(packageRoot(), 'systemd') });
      for (const { path, keptAt } of report.replaced) {
        process.stdout.write(`replaced ${path}, which differed (kept as ${keptAt}; local changes belong in a drop-in: systemctl edit ${basename(path)})\n`);
      }
      for (const path of report.written) process.stdout.write(`wrote ${path}\n`);
      for (const path of report.unchanged) process.stdout.write(`unchanged ${path}\n`);
      if (report.keptEnvFile) process.stdout.write(`kept ${report.keptEnvFile} (already there; not overwritten)\n`);
      process.stdout.write(`\nsocket: ${socket}\nsettings: ${envFile}\nthen run:\n  systemctl daemon-reload\n  systemctl enable --now stowage.socket\n`);
    });
}
