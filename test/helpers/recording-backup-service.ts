/**
 * A BackupService that records its calls and runs each operation as the test says: how much
 * progress to report, whether to wait for a gate first, how to end. For the shells' tests only
 * (the daemon's jobs, the control API, the CLI); the real service is tested against real storage.
 */
import { ContainerModule } from 'inversify';
import type {
  BackupDetail, BackupService, BackupSummary, CreateResult, DeleteResult, JobProgress, ProgressOptions, VerifyResult,
} from '../../src/core/backup/service-contract.js';
import { ErrorCodes, StowageError } from '../../src/core/errors.js';
import { TOKENS } from '../../src/core/tokens.js';

export interface Script {
  progress: JobProgress[];
  /** When set, the operation waits for it after its progress (and stops when aborted). */
  gate?: Promise<void>;
  fail?: StowageError;
  /** The warnings a backup it makes records. */
  warnings?: string[];
  /** The backup it makes answers that it made its repository. */
  repositoryCreated?: boolean;
}

export class RecordingBackupService implements BackupService {
  readonly calls: { op: string; args: unknown[] }[] = [];
  script: Script = { progress: [] };
  readonly backups = new Map<string, BackupDetail>();

  private async play(options: ProgressOptions | undefined): Promise<void> {
    for (const p of this.script.progress) options?.onProgress?.(p);
    if (this.script.gate) {
      await new Promise<void>((resolve, reject) => {
        void this.script.gate!.then(resolve);
        if (options?.signal?.aborted) reject(new StowageError(ErrorCodes.INVALID_REQUEST, 'cancelled'));
        options?.signal?.addEventListener('abort', () => reject(new StowageError(ErrorCodes.INVALID_REQUEST, 'cancelled')));
      });
    }
    if (this.script.fail) throw this.script.fail;
  }

  private known(url: string): BackupDetail {
    const found = this.backups.get(url);
    if (!found) throw new StowageError(ErrorCodes.BACKUP_NOT_FOUND, `no backup at ${url}`);
    return found;
  }

  async createBackup(volume: string, options: ProgressOptions & { dest: string; snapshot?: string; keepSnapshot?: boolean }): Promise<BackupDetail> {
    this.calls.push({ op: 'createBackup', args: [volume, { dest: options.dest, snapshot: options.snapshot, keepSnapshot: options.keepSnapshot }] });
    await this.play(options);
    const id = `b${this.backups.size + 1}`;
    const detail: BackupDetail = {
      url: `${options.dest}?volume=${volume}&backup=${id}`, volume, id, host: 'test', startedAt: '2026-01-01T00:00:00.000Z',
      finishedAt: '2026-01-01T00:00:01.000Z', state: 'complete', warnings: this.script.warnings ?? [], ...(this.script.repositoryCreated ? { repositoryCreated: true as const } : {}), ...(options.snapshot ? { snapshot: options.snapshot } : {}),
    };
    this.backups.set(detail.url, detail);
    return detail;
  }

  async checkRequest(volume: string, { dest }: { dest: string }): Promise<void> {
    this.calls.push({ op: 'checkRequest', args: [volume, dest] });
    if (!dest.startsWith('vfs://') && !dest.startsWith('s3://')) throw new StowageError(ErrorCodes.INVALID_REQUEST, `${dest} is not a repository URL`);
  }

  async listBackups(dest: string, options?: { volume?: string }): Promise<BackupSummary[]> {
    this.calls.push({ op: 'listBackups', args: [dest, options] });
    return [...this.backups.values()].filter((b) => b.url.startsWith(dest) && (!options?.volume || b.volume === options.volume));
  }

  async inspectBackup(url: string): Promise<BackupDetail> {
    this.calls.push({ op: 'inspectBackup', args: [url] });
    return this.known(url);
  }

  async checkDelete(url: string): Promise<BackupDetail> {
    this.calls.push({ op: 'checkDelete', args: [url] });
    if (url.includes('/own-storage/')) throw new StowageError(ErrorCodes.INVALID_REQUEST, `the repository in ${url} is inside stowage's own storage`);
    return this.known(url);
  }

  async deleteBackup(url: string, options?: ProgressOptions): Promise<DeleteResult> {
    this.calls.push({ op: 'deleteBackup', args: [url] });
    await this.play(options);
    this.backups.delete(url);
    return { url, deletedPacks: 2, freedBytes: 3 * 1024 * 1024 };
  }

  async verifyBackup(url: string, options?: ProgressOptions): Promise<VerifyResult> {
    this.calls.push({ op: 'verifyBackup', args: [url] });
    this.known(url);
    await this.play(options);
    return { url, files: 3, chunks: 4, bytes: 5 };
  }

  async restoreVolume(name: string, url: string, options?: ProgressOptions & { volumeOptions?: Record<string, string> }): Promise<CreateResult> {
    this.calls.push({ op: 'restoreVolume', args: [name, url, options?.volumeOptions] });
    await this.play(options);
    return {
      created: true,
      volume: { name, status: {}, mountCount: 0, createdAt: '2026-01-01T00:00:00.000Z', createdBy: 'node-a' } as unknown as CreateResult['volume'],
    };
  }
}

/** Binds `service` as the container's BackupService. */
export function backupServiceModule(service: BackupService): ContainerModule {
  return new ContainerModule(({ bind, isBound, rebind }) => {
    if (isBound(TOKENS.BackupService)) rebind<BackupService>(TOKENS.BackupService).toConstantValue(service);
    else bind<BackupService>(TOKENS.BackupService).toConstantValue(service);
  });
}
