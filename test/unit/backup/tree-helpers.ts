import type { BackupRecord, Entry } from '../../../src/core/backup/format.js';
import type { Repository } from '../../../src/core/backup/repository.js';

export async function collect(repo: Repository, record: BackupRecord): Promise<{ entries: Entry[] }> {
  const entries: Entry[] = [];
  for await (const e of repo.entries(record)) entries.push(e);
  return { entries };
}
