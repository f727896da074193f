/**
 * A backup or snapshot that reads a vfs/glusterfs volume's live data does not hold the volume's
 * lock for the whole read: mounts and unmounts go on, a remove is refused naming the reason, and
 * once the read ends the remove works. A consistent read still holds the lock (mounts wait).
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createStowage, ErrorCodes, type Stowage } from '../../../src/index.js';

const dirs: string[] = [];
const open: Stowage[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()));
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function stowage(): Promise<Stowage> {
  const dir = await mkdtemp(join(tmpdir(), 'stowage-live-read-'));
  dirs.push(dir);
  const s = await createStowage({ options: { 'vfs.path': join(dir, 'volumes') }, root: join(dir, 'state'), nodeId: 'node-1' });
  open.push(s);
  return s;
}

function gate(): { promise: Promise<void>; open: () => void } {
  let openGate!: () => void;
  const promise = new Promise<void>((resolve) => { openGate = resolve; });
  return { promise, open: openGate };
}

/** Settles to 'pending' if `p` has not settled once every queued task and I/O callback ran. */
async function stateOf(p: Promise<unknown>): Promise<'resolved' | 'rejected' | 'pending'> {
  const marker = Symbol('pending');
  await new Promise((r) => setTimeout(r, 50));
  return Promise.race([p.then(() => 'resolved' as const, () => 'rejected' as const), Promise.resolve(marker)])
    .then((v) => (v === marker ? 'pending' : v));
}

describe('reading a volume live', () => {
  it('lets a mount and an unmount through, and refuses a remove until the read ends', async () => {
    const s = await stowage();
    await s.create('db');
    const g = gate();
    let readFrom = '';
    const reading = s.manager.readLiveVolume('db', {}, async (path) => {
      readFrom = path;
      await g.promise;
      return readFile(join(path, 'row'), 'utf8');
    });
    // The mount is answered while the read still runs (it waits for nothing but the read's start).
    const path = await s.mount('db', 'container-1');
    await writeFile(join(path, 'row'), 'written during the read');
    await s.unmount('db', 'container-1');
    const removal = s.remove('db');
    await expect(removal).rejects.toMatchObject({ code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/being read by 1 backup/) });
    expect((await s.manager.get('db')).name).toBe('db');
    g.open();
    expect(await reading).toBe('written during the read');
    expect(readFrom).toBe(path);
    await s.remove('db');
    await expect(s.manager.get('db')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_NOT_FOUND });
  });

  it('a failed read releases the volume too', async () => {
    const s = await stowage();
    await s.create('db');
    await expect(s.manager.readLiveVolume('db', {}, async () => { throw new Error('the read broke'); })).rejects.toThrow('the read broke');
    await s.remove('db');
    await expect(s.manager.get('db')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_NOT_FOUND });
  });

  it('a consistent read holds the volume: a mount waits for its end', async () => {
    const s = await stowage();
    await s.create('db');
    const g = gate();
    const reading = s.manager.readLiveVolume('db', { consistent: true }, () => g.promise);
    const mounting = s.mount('db', 'container-1');
    expect(await stateOf(mounting)).toBe('pending');
    g.open();
    await reading;
    expect(await mounting).toMatch(/db$/);
    await s.unmount('db', 'container-1');
  });

  it('a backup through the service leaves the volume removable once it ends', async () => {
    const s = await stowage();
    await s.create('db');
    const dir = dirs.at(-1)!;
    await s.createBackup('db', { dest: `vfs://${join(dir, 'backups')}` });
    await s.remove('db');
    await expect(s.manager.get('db')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_NOT_FOUND });
  });
});
