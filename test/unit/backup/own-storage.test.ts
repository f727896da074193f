/**
 * Where no backup repository may be (own-storage.ts), on the default layout: the store is the
 * root's `volumes` directory, so the root contains it.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { OwnStorage } from '../../../src/core/backup/own-storage.js';

describe("stowage's own storage, with the store inside the root", () => {
  let base = '';
  afterEach(async () => { await rm(base, { recursive: true, force: true }); });

  it("allows a removed volume's kept snapshots in the store's snapshot repository, and nothing else there", async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-own-storage-'));
    const root = join(base, 'root');
    const store = join(root, 'volumes');
    await mkdir(join(store, '.stowage', 'snapshots'), { recursive: true });
    const own = new OwnStorage([root, ...OwnStorage.storeOf(join(store, '.stowage', 'cluster'))]);
    const kept = 'pg..removed-20261205T190000Z-a1b2c3';
    const outcome = (path: string, retained?: string) => own.assertOutside({ scheme: 'vfs', path }, 'the repository', retained)
      .then(() => 'allowed', (err: unknown) => (err as { code?: string }).code ?? String(err));
    expect(await outcome(join(store, '.stowage', 'snapshots'), kept)).toBe('allowed');
    expect(await outcome(join(store, '.stowage', 'snapshots'), 'pg')).toBe('E_INVALID_REQUEST');
    expect(await outcome(join(store, '.stowage', 'snapshots'))).toBe('E_INVALID_REQUEST');
    expect(await outcome(join(store, 'pg'), kept)).toBe('E_INVALID_REQUEST');
    expect(await outcome(join(root, 'elsewhere'), kept)).toBe('E_INVALID_REQUEST');
    expect(await outcome(join(base, 'backups'), kept)).toBe('allowed');
  });
});
