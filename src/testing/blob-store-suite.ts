import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { listAll, MAX_DELETE_BATCH, type BlobStore } from '../core/backup/blob-store.js';
import { ErrorCodes } from '../core/errors.js';

export interface BlobStoreHarness {
  store: BlobStore;
  /** Removes what setup made. */
  cleanup?: () => Promise<void>;
}

/**
 * The sentences every backup target's BlobStore keeps (see the BlobStore interface). Call it
 * once per target in a vitest file; `setup` returns a fresh, empty store for each test.
 */
export function describeBlobStoreConformance(label: string, setup: () => Promise<BlobStoreHarness>): void {
  describe(`BlobStore conformance: ${label}`, () => {
    let h: BlobStoreHarness;
    beforeEach(async () => { h = await setup(); });
    afterEach(async () => { await h.cleanup?.(); });

    it('put stores an object once; a second put of the same key changes nothing and says so', async () => {
      expect(await h.store.put('a/b/one', Buffer.from('first'))).toBe(true);
      expect(await h.store.put('a/b/one', Buffer.from('second, longer'))).toBe(false);
      expect((await h.store.get('a/b/one')).toString()).toBe('first');
      expect(await h.store.head('a/b/one')).toEqual({ size: 5 });
    });

    it('get of a missing key fails with E_BACKUP_OBJECT_MISSING naming the key; head says undefined', async () => {
      await expect(h.store.get('no/such')).rejects.toMatchObject({ code: ErrorCodes.BACKUP_OBJECT_MISSING, message: expect.stringContaining('no/such') });
      await expect(h.store.getRange('no/such', 0, 1)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_OBJECT_MISSING });
      expect(await h.store.head('no/such')).toBeUndefined();
    });

    it('getRange returns the bytes asked for, and fewer only past the end', async () => {
      const data = Buffer.from(Array.from({ length: 300 }, (_, i) => i % 256));
      await h.store.put('r', data);
      expect(await h.store.getRange('r', 10, 20)).toEqual(data.subarray(10, 30));
      expect(await h.store.getRange('r', 290, 20)).toEqual(data.subarray(290));
      expect((await h.store.getRange('r', 400, 5)).length).toBe(0);
    });

    it('keys outside the safe alphabet are refused before anything is stored', async () => {
      for (const key of ['../x', '/abs', 'a//b', 'a/./b', 'a/../b', '.hidden', 'a/.tmp', 'sp ace', 'new\nline', '', 'a/']) {
        await expect(h.store.put(key, Buffer.from('x')), key).rejects.toMatchObject({ code: ErrorCodes.INVALID_REQUEST });
        await expect(h.store.get(key), key).rejects.toMatchObject({ code: ErrorCodes.INVALID_REQUEST });
      }
      expect((await h.store.list('')).objects).toEqual([]);
    });

    it('list returns keys under a prefix in byte order with sizes, and only those', async () => {
      for (const key of ['p/b', 'p/a.x', 'p/a/c', 'p2', 'q/z', 'pa']) await h.store.put(key, Buffer.from(key));
      const page = await h.store.list('p/');
      expect(page.objects).toEqual([{ key: 'p/a.x', size: 5 }, { key: 'p/a/c', size: 5 }, { key: 'p/b', size: 3 }]);
      expect(page.next).toBeUndefined();
      expect((await h.store.list('p')).objects.map((o) => o.key)).toEqual(['p/a.x', 'p/a/c', 'p/b', 'p2', 'pa']);
      expect((await h.store.list('')).objects.length).toBe(6);
      expect((await h.store.list('none/')).objects).toEqual([]);
    });

    it('list pages through more than 1000 keys, each exactly once', async () => {
      const keys = Array.from({ length: 1050 }, (_, i) => `many/${String(i).padStart(2, '0').slice(0, 2)}/k${i}`);
      for (const key of keys) await h.store.put(key, Buffer.from('x'));
      const first = await h.store.list('many/', { pageSize: 5000 });
      expect(first.objects.length).toBeLessThanOrEqual(1000);
      expect(first.next).toBeDefined();
      const seen: string[] = [];
      let pages = 0;
      let startAfter: string | undefined;
      do {
        const page = await h.store.list('many/', { pageSize: 300, startAfter });
        pages += 1;
        seen.push(...page.objects.map((o) => o.key));
        startAfter = page.next;
      } while (startAfter !== undefined);
      expect(pages).toBe(4);
      expect(seen).toEqual([...keys].sort());
      const all: string[] = [];
      for await (const o of listAll(h.store, 'many/', 150)) all.push(o.key);
      expect(all.length).toBe(1050);
    });

    it('delete removes a batch, ignores keys already gone, and refuses more than 1000 at once', async () => {
      for (const key of ['d/1', 'd/2', 'd/3']) await h.store.put(key, Buffer.from('x'));
      await h.store.delete(['d/1', 'd/3', 'd/never']);
      expect((await h.store.list('d/')).objects.map((o) => o.key)).toEqual(['d/2']);
      const tooMany = Array.from({ length: MAX_DELETE_BATCH + 1 }, (_, i) => `d/${i}`);
      await expect(h.store.delete(tooMany)).rejects.toMatchObject({ code: ErrorCodes.INVALID_REQUEST });
      expect((await h.store.list('d/')).objects.map((o) => o.key)).toEqual(['d/2']);
      // A deleted key can be written again (GC then a new backup).
      expect(await h.store.put('d/1', Buffer.from('again'))).toBe(true);
      expect((await h.store.get('d/1')).toString()).toBe('again');
    });

    it('concurrent puts of one key: exactly one wins and the object is whole', async () => {
      const bodies = Array.from({ length: 8 }, (_, i) => Buffer.alloc(256 * 1024, i + 1));
      const results = await Promise.all(bodies.map((b) => h.store.put('race', b)));
      expect(results.filter(Boolean).length).toBe(1);
      const winner = bodies[results.indexOf(true)]!;
      expect((await h.store.get('race')).equals(winner)).toBe(true);
    });
  });
}
