/**
 * A small custom Backend of an embedding project, written only against the published package:
 * volume records in memory, each volume's data a directory under `dir/volumes`.
 */
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ErrorCodes, StowageError,
  type Backend, type BackendCapabilities, type CreateRequest, type RemoveOutcome, type RemoveRequest, type VolumeRecord,
} from 'stowage';

/** A deliberate fault, to show that the suite notices one. */
export type Flaw = 'reuses-taken-names';

export class MemoryBackend implements Backend {
  readonly name = 'memory';
  readonly capabilities: BackendCapabilities = { scope: 'local', sizeLimit: 'recorded' };
  private readonly volumes = new Map<string, VolumeRecord>();
  private retained = 0;

  constructor(readonly dir: string, private readonly flaw?: Flaw) {}

  async init(): Promise<void> {
    const found = await stat(this.dir).catch(() => undefined);
    if (!found?.isDirectory()) throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, `${this.dir} is not a directory`);
    await mkdir(join(this.dir, 'retained'), { recursive: true });
  }

  async dispose(): Promise<void> {}

  private pathOf(name: string): string {
    return join(this.dir, 'volumes', name);
  }

  async create({ record: asked, adopt }: CreateRequest): Promise<VolumeRecord> {
    const { name } = asked;
    if (this.volumes.has(name) && this.flaw !== 'reuses-taken-names') {
      throw new StowageError(ErrorCodes.VOLUME_EXISTS, `volume ${name} already exists`);
    }
    const path = this.pathOf(name);
    const found = (await readdir(path).catch(() => [])).length > 0;
    if (found && !adopt) {
      throw new StowageError(ErrorCodes.DATA_CONFLICT, `${path} already holds data; adopt it to make it volume ${name}`);
    }
    const record: VolumeRecord = { ...asked, ...(found ? { adopted: true } : {}) };
    await mkdir(path, { recursive: true });
    this.volumes.set(name, record);
    return record;
  }

  async get(name: string): Promise<VolumeRecord | undefined> {
    return this.volumes.get(name);
  }

  async list(): Promise<VolumeRecord[]> {
    return [...this.volumes.values()];
  }

  async remove(name: string, { retain }: RemoveRequest): Promise<RemoveOutcome> {
    if (!this.volumes.delete(name)) return {};
    if (!retain) {
      await rm(this.pathOf(name), { recursive: true, force: true });
      return {};
    }
    const retainedAt = join(this.dir, 'retained', `${name}-${++this.retained}`);
    await rename(this.pathOf(name), retainedAt);
    return { retainedAt };
  }

  async attach(name: string): Promise<string> {
    if (!this.volumes.has(name)) throw new StowageError(ErrorCodes.VOLUME_NOT_FOUND, `volume ${name} does not exist`);
    await mkdir(this.pathOf(name), { recursive: true });
    return this.pathOf(name);
  }

  async detach(): Promise<void> {}

  async volumeStatus(name: string): Promise<Record<string, string>> {
    return { path: this.pathOf(name) };
  }

  async describe(): Promise<Record<string, string>> {
    return { directory: this.dir };
  }
}
