/**
 * A separate process that holds a repository lock until it is killed:
 * `tsx repo-lock-child.ts DIR`. Prints `held` once it holds a shared lock on the vfs repository
 * at DIR, then waits.
 */
import { VfsBlobStore } from '../../src/backup-targets/vfs/vfs-blob-store.js';
import { acquireLock } from '../../src/core/backup/locks.js';

const [dir] = process.argv.slice(2);
await acquireLock(new VfsBlobStore(dir!, { durable: false }), { kind: 'shared', owner: 'child', purpose: 'backup of held' });
process.stdout.write('held\n');
setInterval(() => {}, 1 << 30);
