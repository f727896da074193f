/**
 * A backup repository inside stowage's own storage is refused (own-storage.ts), also where the
 * store shows through another mount: a bind mount of it or of a directory in it. Seen by path
 * alone, a backup delete through such a mount took a live snapshot's backup.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mountNamespaceSuite } from '../../helpers/requirements.js';

const noUnshare = mountNamespaceSuite('a private mount namespace for bind mounts');

describe.skipIf(noUnshare)("stowage's own storage seen through other mounts", () => {
  let base = '';
  beforeAll(async () => { base = await mkdtemp(join(tmpdir(), 'stowage-own-storage-')); });
  afterAll(async () => { if (base) await rm(base, { recursive: true, force: true }); });

  it('is refused through a bind mount of the store or of a directory in it; the kept-snapshots exception holds only for the snapshot repository', async () => {
    // The mounts live and die with the child's namespace: nothing is left mounted here.
    const child = await execa('unshare', ['--mount', '--propagation', 'private',
      process.execPath, '--import', 'tsx', join(import.meta.dirname, 'own-storage-child.ts'), base]);
    expect(JSON.parse(child.stdout)).toEqual({
      storeItself: 'refused',
      wholeBind: 'refused',
      wholeBindNew: 'refused',
      partBind: 'refused',
      spacedBind: 'refused',
      keptThroughBind: 'allowed',
      keptThroughPartBind: 'allowed',
      keptElsewhereInStore: 'refused',
      elsewhere: 'allowed',
    });
  });
});
