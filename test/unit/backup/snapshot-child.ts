/**
 * Takes one repository snapshot in its own process, for the orphan test: once the snapshot's
 * backup is written, and before its name is, it prints "backed-up" and waits to be killed.
 * argv: repository dir, data dir, volume, snapshot name.
 */
import { RepositorySnapshots } from '../../../src/core/backup/repository-snapshots.js';
import { silentLogger } from '../../../src/core/logger.js';

const [repoDir, dataDir, volume, snapshot] = process.argv.slice(2) as [string, string, string, string];
const snapshots = new RepositorySnapshots({
  backend: 'vfs',
  repositoryDir: async () => repoDir,
  hasRepository: async () => true,
  dataPath: async () => dataDir,
  // Called between the backup and the name: the point a crash leaves a backup nothing names.
  releaseDataPath: async () => {
    process.stdout.write('backed-up\n');
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 120_000);
  },
  log: silentLogger,
});
await snapshots.createSnapshot(volume, snapshot);
process.stdout.write('named\n');
