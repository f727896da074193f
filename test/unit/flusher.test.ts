import { createFsFromVolume, Volume } from 'memfs';
import { describe, expect, it } from 'vitest';
import { createFileExclusive } from '../../src/core/atomic-file.js';
import { Flusher, MAX_ROUND_FILES } from '../../src/core/flusher.js';
import type { FsPort } from '../../src/core/fs-port.js';
import { memoryLogger } from '../helpers/memory-logger.js';

/** memfs with every fsync recorded by path (the handle's path is kept from open). */
function syncRecordingFs(fail: (path: string) => boolean = () => false): { fs: FsPort; synced: string[]; events: string[] } {
  const base = createFsFromVolume(new Volume()).promises as unknown as FsPort;
  const synced: string[] = [];
  const events: string[] = [];
  const fs = {
    ...base,
    link: async (from: string, to: string) => { events.push(`link ${to}`); return base.link(from, to); },
    open: async (path: string, flags?: string | number, mode?: number) => {
      const handle = await base.open(path, flags, mode);
      return Object.assign(Object.create(Object.getPrototypeOf(handle) as object) as object, handle, {
        sync: async () => {
          if (fail(path)) throw Object.assign(new Error(`EIO: i/o error, fsync '${path}'`), { code: 'EIO' });
          synced.push(path);
          events.push(`sync ${path}`);
        },
        close: () => handle.close(),
        stat: () => handle.stat(),
        writeFile: (data: string) => handle.writeFile(data),
      });
    },
  } as unknown as FsPort;
  return { fs, synced, events };
}

describe('Flusher', () => {
  it('answers the write first and flushes the new file after its link, with its directory', async () => {
    const { fs, synced, events } = syncRecordingFs();
    await fs.mkdir('/reg', { recursive: true });
    const flusher = new Flusher(fs, memoryLogger());
    const created = await createFileExclusive(fs, '/reg/a.json', '{"a":1}', { flusher });
    expect(created).not.toBe(false);
    // Nothing flushed yet when the write returns: that is the point.
    expect(synced).toEqual([]);
    await flusher.durable('/reg/a.json');
    expect(events.indexOf('link /reg/a.json')).toBeLessThan(events.findIndex((e) => e.startsWith('sync /reg/.tmp-')));
    expect(synced.some((p) => p.startsWith('/reg/.tmp-'))).toBe(true);
    expect(synced).toContain('/reg');
    expect(await fs.readFile('/reg/a.json', 'utf8')).toBe('{"a":1}');
  });

  it('flushes writes made meanwhile together, one directory fsync per round', async () => {
    const { fs, synced } = syncRecordingFs();
    await fs.mkdir('/reg', { recursive: true });
    const flusher = new Flusher(fs, memoryLogger());
    await Promise.all(['a', 'b', 'c', 'd'].map((n) => createFileExclusive(fs, `/reg/${n}.json`, n, { flusher })));
    await Promise.all(['a', 'b', 'c', 'd'].map((n) => flusher.durable(`/reg/${n}.json`)));
    expect(synced.filter((p) => p.startsWith('/reg/.tmp-'))).toHaveLength(4);
    expect(synced.filter((p) => p === '/reg')).toHaveLength(1);
    expect(flusher.pending).toBe(0);
  });

  it('resolves at once for a path with nothing pending, and drains on demand', async () => {
    const { fs, synced } = syncRecordingFs();
    await fs.mkdir('/d', { recursive: true });
    const flusher = new Flusher(fs, memoryLogger());
    await flusher.durable('/d/none.json');
    flusher.directory('/d');
    expect(flusher.pending).toBe(1);
    await flusher.drain();
    expect(synced).toEqual(['/d']);
    expect(flusher.pending).toBe(0);
  });

  it('reports a failed flush to the next caller that needs the file, logs it, and retries it then', async () => {
    let broken = true;
    const { fs, synced } = syncRecordingFs((path) => broken && (path.includes('.tmp-') || path === '/reg/a.json'));
    await fs.mkdir('/reg', { recursive: true });
    const log = memoryLogger();
    const flusher = new Flusher(fs, log);
    await createFileExclusive(fs, '/reg/a.json', 'a', { flusher });
    await expect(flusher.durable('/reg/a.json')).rejects.toMatchObject({ code: 'EIO' });
    expect(log.lines.join('\n')).toMatch(/could not flush \/reg\/a\.json/);
    // Still failing: the retry reopens the file by its name and fails again, loudly.
    await expect(flusher.durable('/reg/a.json')).rejects.toMatchObject({ code: 'EIO' });
    broken = false;
    await flusher.durable('/reg/a.json');
    expect(synced).toContain('/reg/a.json');
    // Once it succeeded, nothing is pending or failed for the path any more.
    const before = synced.length;
    await flusher.durable('/reg/a.json');
    expect(synced.length).toBe(before);
  });

  it('lets writes of the next moments join a round, and starts it at once for whoever needs it', async () => {
    const { fs, synced } = syncRecordingFs();
    await fs.mkdir('/reg', { recursive: true });
    // A delay no test waits out: only durable() and drain() can start these rounds.
    const flusher = new Flusher(fs, memoryLogger(), 60_000);
    await createFileExclusive(fs, '/reg/a.json', 'a', { flusher });
    await new Promise((resolve) => setTimeout(resolve, 20));
    await createFileExclusive(fs, '/reg/b.json', 'b', { flusher });
    expect(synced).toEqual([]);
    await flusher.durable('/reg/b.json');
    // Both files in one round, with one fsync of their directory.
    expect(synced.filter((p) => p.startsWith('/reg/.tmp-'))).toHaveLength(2);
    expect(synced.filter((p) => p === '/reg')).toHaveLength(1);
    await createFileExclusive(fs, '/reg/c.json', 'c', { flusher });
    expect(flusher.pending).toBe(2); // the file and its directory
    await flusher.drain();
    expect(flusher.pending).toBe(0);
    expect(synced.filter((p) => p === '/reg')).toHaveLength(2);
  });

  it('starts a round that holds MAX_ROUND_FILES open files without waiting for anyone', async () => {
    const { fs, synced } = syncRecordingFs();
    await fs.mkdir('/reg', { recursive: true });
    const flusher = new Flusher(fs, memoryLogger(), 60_000);
    for (let i = 0; i < MAX_ROUND_FILES; i += 1) await createFileExclusive(fs, `/reg/v${i}.json`, String(i), { flusher });
    for (let tries = 0; tries < 100 && synced.filter((p) => p === '/reg').length === 0; tries += 1) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(synced.filter((p) => p.startsWith('/reg/.tmp-'))).toHaveLength(MAX_ROUND_FILES);
    expect(synced.filter((p) => p === '/reg')).toHaveLength(1);
  });

  it('does not wait for files its caller marks urgent (a network filesystem, where content reaches the server only when flushed)', async () => {
    const { fs, synced } = syncRecordingFs();
    await fs.mkdir('/nfs', { recursive: true });
    await fs.mkdir('/local', { recursive: true });
    const flusher = new Flusher(fs, memoryLogger(), 60_000, (path) => path.startsWith('/nfs'));
    await createFileExclusive(fs, '/local/a.json', 'a', { flusher });
    await createFileExclusive(fs, '/nfs/b.json', 'b', { flusher });
    await flusher.durable('/nfs/b.json');
    // Durable means its new name too: the directory went in the file's round.
    expect(synced).toContain('/nfs');
    // And nobody needs to wait for such a file: its round starts anyway.
    const unwatched = new Flusher(fs, memoryLogger(), 60_000, (path) => path.startsWith('/nfs'));
    await createFileExclusive(fs, '/nfs/c.json', 'c', { flusher: unwatched });
    const flushedC = () => synced.some((p) => p.startsWith('/nfs/.tmp-') && p.endsWith('-c.json'));
    for (let tries = 0; tries < 100 && !flushedC(); tries += 1) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(flushedC()).toBe(true);
    // The first round took the waiting local file along.
    expect(synced).toContain('/local');
    expect(flusher.pending).toBe(0);
  });
});
