import { isAbsolute, join, normalize } from 'node:path';
import type { Backend, VolumeRecord } from './backend.js';
import type { CommandRunner } from './command-runner.js';
import { ErrorCodes, StowageError, firstLine } from './errors.js';
import type { FsPort } from './fs-port.js';
import type { Logger } from './logger.js';
import { mountAt, parseProcMounts } from './proc-mounts.js';
import { randomHex } from './random-hex.js';
import { writeFileAtomic } from './atomic-file.js';

async function readId(fs: FsPort, path: string): Promise<string | undefined> {
  try {
    const text = (await fs.readFile(path, 'utf8')).trim();
    return text === '' ? undefined : text;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

const MOUNTS_FILE = '/proc/self/mounts';
/** The state's identity, in the state directory and, as a witness, in the mount dir. */
export const STATE_ID_FILE = '.stowage-state';

/** `--mount-dir` must be an absolute, normalised path that is not `/` (volumes appear as its children). */
export function validateMountDir(dir: string): string {
  const normalised = normalize(dir).replace(/\/+$/, '');
  if (!isAbsolute(dir) || normalised === '' || normalised !== dir.replace(/\/+$/, '')) {
    throw new StowageError(ErrorCodes.INVALID_OPTION,
      `mount dir ${JSON.stringify(dir)} must be an absolute path other than /, without "." or ".." parts`);
  }
  return normalised;
}

/**
 * Presents every attached volume at `<mountDir>/<name>`, a bind mount of the path the backend
 * attached, and hands that path to Docker instead of the backend's own.
 *
 * A managed (v2) plugin needs this: the engine only sees mounts made under the plugin's
 * `propagatedMount` (it rewrites the returned path under `<data-root>/plugins/<ID>/propagated-mount`),
 * while the backends keep their data and mounts under the state directory, which lives on a
 * host bind mount so it survives the plugin. The bind mount outlives the daemon: after a restart
 * the engine brings the propagated mounts back, and attach finds them in place.
 *
 * The mount dir also keeps a witness of the state directory it served: a managed plugin's
 * propagated mount lives as long as the plugin is installed, its state directory is a host
 * path that can come up empty (a disk not mounted at boot, a `docker plugin set` to a new
 * directory). A plugin that answered "no such volume" from empty state would make the engine
 * silently create a `local` volume of the same name, so the daemon refuses to start instead.
 */
export class MountDirBackend implements Backend {
  readonly name: string;
  readonly capabilities: Backend['capabilities'];
  readonly snapshots: Backend['snapshots'];
  readonly settle: Backend['settle'];
  readonly ready: Backend['ready'];
  readonly assertClusterStore: Backend['assertClusterStore'];
  readonly usage: Backend['usage'];
  readonly storageHealth: Backend['storageHealth'];

  constructor(
    private readonly inner: Backend,
    private readonly mountDir: string,
    private readonly runner: CommandRunner,
    private readonly fs: FsPort,
    private readonly log: Logger,
    private readonly stateDir: string,
  ) {
    this.name = inner.name;
    this.capabilities = inner.capabilities;
    this.snapshots = inner.snapshots;
    this.settle = inner.settle?.bind(inner);
    this.ready = inner.ready?.bind(inner);
    this.assertClusterStore = inner.assertClusterStore?.bind(inner);
    this.usage = inner.usage?.bind(inner);
    this.storageHealth = inner.storageHealth?.bind(inner);
  }

  async init(): Promise<void> {
    await this.fs.mkdir(this.mountDir, { recursive: true });
    await this.checkStateWitness();
    await this.inner.init();
  }

  private async checkStateWitness(): Promise<void> {
    const witnessPath = join(this.mountDir, STATE_ID_FILE);
    const statePath = join(this.stateDir, STATE_ID_FILE);
    const [witness, state] = await Promise.all([readId(this.fs, witnessPath), readId(this.fs, statePath)]);
    if (witness !== undefined && witness !== state) {
      const found = state === undefined ? `holds no stowage state (no ${STATE_ID_FILE})` : `holds other state (${state})`;
      throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE,
        `the state directory ${this.stateDir} ${found}, but volumes were served from ${this.mountDir} with state ${witness}: ` +
        `refusing to start, since answering "no such volume" for them would let Docker create empty local volumes in their place. ` +
        `Mount the right state directory (managed plugin: docker plugin set <plugin> state.source=/host/dir), or, to start ` +
        `afresh on purpose, delete ${STATE_ID_FILE} in the mount dir (managed plugin: <docker data-root>/plugins/<plugin id>/propagated-mount/).`);
    }
    let id = state;
    if (id === undefined) {
      id = randomHex(16);
      await this.fs.mkdir(this.stateDir, { recursive: true });
      await writeFileAtomic(this.fs, statePath, `${id}\n`);
    }
    if (witness === undefined) await writeFileAtomic(this.fs, witnessPath, `${id}\n`);
  }

  dispose(): Promise<void> {
    return this.inner.dispose();
  }

  create: Backend['create'] = (request) => this.inner.create(request);
  get: Backend['get'] = (name) => this.inner.get(name);
  list: Backend['list'] = () => this.inner.list();
  volumeStatus: Backend['volumeStatus'] = (name) => this.inner.volumeStatus(name);
  describe: Backend['describe'] = async () => ({ ...(await this.inner.describe()), mountDir: this.mountDir });

  async remove(name: string, request: Parameters<Backend['remove']>[1]): Promise<Awaited<ReturnType<Backend['remove']>>> {
    // The core only removes unmounted volumes; a bind left by a crash must not pin the data.
    await this.unbind(name);
    return this.inner.remove(name, request);
  }

  /** Idempotent: a bind of the same directory is kept, anything else at the path is replaced. */
  async attach(name: string, known?: VolumeRecord): Promise<string> {
    const source = await this.inner.attach(name, known);
    const target = join(this.mountDir, name);
    await this.fs.mkdir(target, { recursive: true });
    if (await this.mountedAt(target)) {
      if (await this.sameDirectory(source, target)) return target;
      this.log.warn(`${target} held another mount than volume ${name}'s data (${source}); mounting it again`);
      await this.unbind(name);
      await this.fs.mkdir(target, { recursive: true });
    }
    await this.run(name, ['--bind', source, target], `bind-mounting volume ${name} at ${target}`);
    if (!(await this.sameDirectory(source, target))) {
      throw new StowageError(ErrorCodes.BACKEND_COMMAND, `bind-mounting volume ${name} at ${target} left another directory there`, { volume: name });
    }
    return target;
  }

  async detach(name: string): Promise<void> {
    await this.unbind(name);
    await this.inner.detach(name);
  }

  private async unbind(name: string): Promise<void> {
    const target = join(this.mountDir, name);
    // Stacked mounts (a repaired attach over a stale one) come off one by one.
    for (let layer = 0; layer < 8 && (await this.mountedAt(target)); layer++) {
      await this.runUmount(name, target);
    }
    await this.fs.rmdir(target).catch(() => undefined);
  }

  private async mountedAt(path: string): Promise<boolean> {
    return mountAt(parseProcMounts(await this.fs.readFile(MOUNTS_FILE, 'utf8')), path) !== undefined;
  }

  private async sameDirectory(a: string, b: string): Promise<boolean> {
    const [sa, sb] = await Promise.all([this.fs.stat(a), this.fs.stat(b)]);
    return sa.dev === sb.dev && sa.ino === sb.ino;
  }

  private async run(volume: string, args: string[], what: string): Promise<void> {
    const result = await this.runner.run('mount', args, { allowFailure: true });
    if (result.exitCode !== 0) {
      throw new StowageError(ErrorCodes.BACKEND_COMMAND, `${what} failed: ${firstLine(result.stderr || result.stdout)}`, { volume });
    }
  }

  private async runUmount(volume: string, target: string): Promise<void> {
    const result = await this.runner.run('umount', [target], { allowFailure: true });
    if (result.exitCode !== 0) {
      throw new StowageError(ErrorCodes.BACKEND_COMMAND, `unmounting ${target} (volume ${volume}) failed: ${firstLine(result.stderr || result.stdout)}`,
        { volume });
    }
  }
}
