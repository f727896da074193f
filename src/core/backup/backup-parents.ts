import { join } from 'node:path';
import { z } from 'zod';
import { readJsonFile, writeFileAtomic } from '../atomic-file.js';
import type { FsPort } from '../fs-port.js';
import { isValidVolumeName } from '../names.js';
import { BackupIdSchema, type BackupRecord } from './format.js';
import { backupRecordDigest } from './repository.js';

const PointerSchema = z.object({ id: BackupIdSchema, sha256: z.string().regex(/^[0-9a-f]{64}$/) });
export type ParentPointer = z.infer<typeof PointerSchema>;

const REPOSITORY_ID = /^[0-9a-f]{32}$/;

/**
 * The last file backup this node made of each volume into each repository, with the digest of
 * its record, one file each under `<root>/backup-parents/` (mode 0700). A volume's next backup
 * there takes that one as its parent (its files cache), and only while its record is still
 * the one written: the repository is shared with other machines, and one of them could
 * otherwise write a record that a backup here takes as its parent, and so record the content
 * of its choosing for files that did not change. Kept on this node's own disk, which no other
 * machine writes. A node without a pointer (a first backup here, a volume that moved from
 * another node) reads every file once.
 */
export class BackupParents {
  private readonly dir: string;

  constructor(private readonly fs: FsPort, root: string) {
    this.dir = join(root, 'backup-parents');
  }

  private file(repositoryId: string, volume: string): string | undefined {
    // Both go into a file name: checked here, whatever the caller checked before.
    return REPOSITORY_ID.test(repositoryId) && isValidVolumeName(volume) ? join(this.dir, `${repositoryId}-${volume}.json`) : undefined;
  }

  /** The parent to use, or false (read every file) when this node made no backup there yet. */
  async parentFor(repositoryId: string, volume: string): Promise<ParentPointer | false> {
    const file = this.file(repositoryId, volume);
    if (file === undefined) return false;
    // Missing, unreadable or not a pointer: no parent, which only costs reading every file.
    const parsed = PointerSchema.safeParse(await readJsonFile(this.fs, file).catch(() => undefined));
    return parsed.success ? parsed.data : false;
  }

  /** Remembers `record`, just written by a backup from this node, as its volume's next parent there. */
  async remember(repositoryId: string, record: BackupRecord): Promise<void> {
    const file = this.file(repositoryId, record.volume);
    if (file === undefined) return;
    await this.fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const pointer: ParentPointer = { id: record.id, sha256: backupRecordDigest(record) };
    await writeFileAtomic(this.fs, file, JSON.stringify(pointer));
  }
}
