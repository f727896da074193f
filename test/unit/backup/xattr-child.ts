/**
 * Backs up a tree in its own process and prints what the manifest holds of each entry's
 * extended attributes, with the record's warnings: for running under `unshare --pid` without
 * a /proc of its own. argv: repository dir (made), tree dir.
 */
import { readlinkSync } from 'node:fs';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { backupTree, Repository } from '../../../src/core/backup/index.js';

const [repoDir, treeDir] = process.argv.slice(2) as [string, string];
const repo = await Repository.init(new VfsBlobStore(repoDir, { durable: false }));
const record = await backupTree(treeDir, repo, { volume: 'ns' });
const xattrs: Record<string, unknown> = {};
for await (const entry of repo.entries(record)) if (entry.xattrs) xattrs[entry.path] = entry.xattrs;
process.stdout.write(JSON.stringify({ pid: process.pid, procSelf: readlinkSync('/proc/self'), warnings: record.warnings, xattrs }));
