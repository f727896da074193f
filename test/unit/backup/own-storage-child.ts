/**
 * Run inside a private mount namespace (own-storage-mounts.test.ts): bind-mounts a store and a
 * directory of it elsewhere, then asks OwnStorage about repositories seen through those mounts.
 * Prints, per case, "refused" or "allowed".
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { OwnStorage } from '../../../src/core/backup/own-storage.js';

const [base] = process.argv.slice(2) as [string];
const store = join(base, 'store');
const root = join(base, 'root');
await mkdir(join(store, '.stowage', 'snapshots'), { recursive: true });
await mkdir(join(store, 'pg'), { recursive: true });
await mkdir(root, { recursive: true });
await mkdir(join(base, 'elsewhere'), { recursive: true });
for (const dir of ['whole', 'part', 'spaced dir']) await mkdir(join(base, dir), { recursive: true });
await execa('mount', ['--bind', store, join(base, 'whole')]);
await execa('mount', ['--bind', join(store, '.stowage'), join(base, 'part')]);
await execa('mount', ['--bind', store, join(base, 'spaced dir')]);

const own = new OwnStorage([root, store]);
const kept = 'pg..removed-20261205T190000Z-a1b2c3';
const cases: Record<string, [string, string | undefined]> = {
  storeItself: [join(store, 'repo'), undefined],
  wholeBind: [join(base, 'whole', '.stowage', 'snapshots'), undefined],
  wholeBindNew: [join(base, 'whole', 'not-yet', 'repo'), undefined],
  partBind: [join(base, 'part', 'snapshots'), undefined],
  spacedBind: [join(base, 'spaced dir', 'pg'), undefined],
  keptThroughBind: [join(base, 'whole', '.stowage', 'snapshots'), kept],
  keptThroughPartBind: [join(base, 'part', 'snapshots'), kept],
  keptElsewhereInStore: [join(base, 'whole', 'pg'), kept],
  elsewhere: [join(base, 'elsewhere', 'repo'), undefined],
};
const said: Record<string, string> = {};
for (const [name, [path, retained]] of Object.entries(cases)) {
  said[name] = await own.assertOutside({ scheme: 'vfs', path }, 'the repository', retained).then(() => 'allowed', (err: unknown) =>
    (err as { code?: string }).code === 'E_INVALID_REQUEST' ? 'refused' : `failed: ${String(err)}`);
}
process.stdout.write(JSON.stringify(said));
