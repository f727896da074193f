/**
 * Runs one backup in its own process, for the kill test: prints "progress" once some bytes
 * went through, then carries on until killed. argv: repository dir, tree dir, volume.
 */
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { Repository } from '../../../src/core/backup/repository.js';
import { backupTree } from '../../../src/core/backup/index.js';

const [repoDir, treeDir, volume] = process.argv.slice(2) as [string, string, string];
const repo = await Repository.open(new VfsBlobStore(repoDir));
let told = false;
const pause = new Int32Array(new SharedArrayBuffer(4));
await backupTree(treeDir, repo, {
  volume,
  owner: 'doomed-child',
  onProgress: (p) => {
    if (told) {
      // Slowed down once it told, so the kill always lands partway (a fast backup of the
      // whole tree could otherwise finish first); packs keep being written meanwhile.
      Atomics.wait(pause, 0, 0, 20);
    } else if (p.bytes > 4 * 1024 * 1024) {
      told = true;
      process.stdout.write('progress\n');
    }
  },
});
process.stdout.write('finished\n');
