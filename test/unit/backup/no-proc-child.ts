/**
 * Opens a repository, then hides /proc (an empty tmpfs over it, in the mount namespace the test
 * gave this process) and tries again: the open, a backup and a restore. Prints what each said,
 * as JSON. argv: repository dir, tree dir, restore target, backup id.
 */
import { execa } from 'execa';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { backupTree, Repository, restoreTree } from '../../../src/core/backup/index.js';

const [repoDir, treeDir, target, backupId] = process.argv.slice(2) as [string, string, string, string];
const repo = await Repository.open(new VfsBlobStore(repoDir, { durable: false }));
await execa('mount', ['-t', 'tmpfs', 'none', '/proc']);
const said = (err: unknown) => ({ code: (err as { code?: string }).code, message: (err as Error).message });
const ok = () => ({ code: 'ok', message: '' });
const open = await Repository.open(new VfsBlobStore(repoDir, { durable: false })).then(ok, said);
const backup = await backupTree(treeDir, repo, { volume: 'noproc' }).then(ok, said);
const restore = await restoreTree(repo, 'noproc', backupId, target).then(ok, said);
process.stdout.write(JSON.stringify({ open, backup, restore }));
