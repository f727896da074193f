import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { ErrorCodes, StowageError, errnoCode } from '../../core/errors.js';
import type { FsPort } from '../../core/fs-port.js';
import type { RetainedEntry, VolumeEntry } from './pool-state.js';
import type { ThinPool } from './thin-pool.js';
import type { VolumeFilesystems } from './volume-fs.js';

/** Where volumes (read-write) and retained data (read-only) are mounted on this node. */
export class VolumeMounts {
  constructor(
    private readonly pool: ThinPool,
    private readonly filesystems: VolumeFilesystems,
    private readonly fs: FsPort,
    private readonly dir: string,
  ) {}

  mountPath(name: string): string {
    return join(this.dir, 'mounts', name);
  }

  /** A fresh place for the retained data of a removed volume: `removed/NAME@<UTC time>-<random>`. */
  retainedPath(name: string): string {
    const time = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
    return join(this.dir, 'removed', `${name}@${time}-${randomBytes(3).toString('hex')}`);
  }

  /** Activates the thin device and mounts it at the volume's path (idempotent); returns the path. */
  async mountVolume(entry: VolumeEntry): Promise<string> {
    const name = entry.record.name;
    const path = this.mountPath(name);
    const device = await this.pool.activateDevice(entry.thinId, entry.sectors, `volume ${name}`);
    const mounted = await this.filesystems.mountedAt(path);
    if (mounted && mounted.source !== device) {
      throw new StowageError(ErrorCodes.DATA_CONFLICT, `${mounted.source} is mounted at ${path}, where volume ${name} belongs; ` +
        'unmount it and try again', { volume: name });
    }
    if (!mounted) {
      await this.fs.mkdir(path, { recursive: true });
      if ((await this.fs.readdir(path)).length > 0) {
        throw new StowageError(ErrorCodes.DATA_CONFLICT, `${path} holds files although volume ${name} is not mounted there ` +
          '(written while it was detached?); move them away and try again', { volume: name });
      }
      await this.filesystems.mount(device, path, entry.fs, name);
    }
    if (!entry.prepared) await this.prepareRoot(entry, path);
    return path;
  }

  /** First attach: an empty root (no lost+found) with the owner and mode asked for at create. */
  private async prepareRoot(entry: VolumeEntry, path: string): Promise<void> {
    await this.fs.rmdir(join(path, 'lost+found')).catch((err: unknown) => { if (errnoCode(err) !== 'ENOENT') throw err; });
    const { mode, uid, gid } = entry.record.options;
    if (mode !== undefined) await this.fs.chmod(path, mode);
    if (uid !== undefined || gid !== undefined) {
      const stat = await this.fs.stat(path);
      await this.fs.chown(path, uid ?? stat.uid, gid ?? stat.gid);
    }
    entry.prepared = true;
    await this.pool.save();
  }

  /** Unmounts the volume's path if something is mounted there. */
  async unmount(name: string): Promise<void> {
    await this.filesystems.unmount(this.mountPath(name), name);
  }

  /** Retained data stays readable, read-only, at its own path outside the volume namespace. */
  async mountRetained(retained: RetainedEntry): Promise<void> {
    const label = `retained data of ${retained.name}`;
    const device = await this.pool.activateDevice(retained.thinId, retained.sectors, label);
    if ((await this.filesystems.mountedAt(retained.path))?.source === device) return;
    await this.fs.mkdir(retained.path, { recursive: true });
    await this.filesystems.mount(device, retained.path, retained.fs, label, true);
  }
}
