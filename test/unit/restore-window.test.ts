/**
 * Between the moment a restore has made its new volume and the moment it mounts it, the volume
 * is mounted nowhere. A remove then must be refused (it would leave the restore to fill
 * whatever volume of that name came next), and a volume of the name made meanwhile (a forced
 * remove on another node, then a create) must be neither filled nor removed by the restore.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../src/backup-targets/vfs/vfs-blob-store.js';
import { backupTree, Repository } from '../../src/core/backup/index.js';
import { createRequest } from '../../src/core/create-request.js';
import { ErrorCodes } from '../../src/core/errors.js';
import { memStack, type Stack } from '../helpers/memfs-stack.js';

let dir: string;
let url: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'stowage-restore-window-'));
  await mkdir(join(dir, 'tree'));
  await writeFile(join(dir, 'tree', 'hello.txt'), 'from the backup');
  const repo = await Repository.init(new VfsBlobStore(join(dir, 'repo')));
  const record = await backupTree(join(dir, 'tree'), repo, { volume: 'src', parent: false, xattrs: false });
  url = `vfs://${join(dir, 'repo')}?volume=src&backup=${record.id}`;
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Holds the restore of `name` at its mount, once: resolves `reached` there, goes on at `release()`. */
function holdAtMount(stack: Stack, name: string) {
  let release!: () => void;
  let reached!: () => void;
  const released = new Promise<void>((r) => { release = r; });
  const atMount = new Promise<void>((r) => { reached = r; });
  let armed = false;
  stack.backend.onReady = async (asked) => {
    // The first ready() is the create's; the restore's mount makes the second.
    if (asked !== name) return;
    if (!armed) { armed = true; return; }
    stack.backend.onReady = undefined;
    reached();
    await released;
  };
  return { atMount, release };
}

describe('a restore before it has mounted its volume', () => {
  it('makes a remove of that volume refused, and still removes the volume itself when it fails', async () => {
    const stack = await memStack();
    const { manager } = stack;
    const held = holdAtMount(stack, 'copy');
    const restoring = manager.create('copy', { backup: url });
    restoring.catch(() => {});
    await held.atMount;
    await expect(manager.remove('copy')).rejects.toMatchObject({
      code: ErrorCodes.VOLUME_IN_USE,
      message: expect.stringMatching(/^volume copy is being restored from a backup on node node-a: remove it once the restore has ended/),
    });
    expect((await manager.listBrief()).map((v) => v.name)).toEqual(['copy']);
    // Nor is the same create again answered as made: the volume holds partial data, and may yet go.
    await expect(manager.create('copy')).rejects.toMatchObject({
      code: ErrorCodes.VOLUME_IN_USE, message: 'volume copy is being restored from a backup and holds partial data: use it once the restore has finished',
    });
    held.release();
    // On memfs the restore cannot write its files (the library writes through node:fs): it fails,
    // and removes its own volume, which the refusal above must not stop.
    await expect(restoring).rejects.toMatchObject({ message: expect.stringMatching(/the volume was removed again$/) });
    expect(await manager.listBrief()).toEqual([]);
    await manager.dispose();
  });

  it('neither fills nor removes a volume of that name made meanwhile', async () => {
    const stack = await memStack();
    const { manager, vfs } = stack;
    const held = holdAtMount(stack, 'copy');
    const restoring = manager.create('copy', { backup: url });
    restoring.catch(() => {});
    await held.atMount;
    // Another node removes it by force and someone makes the name again, with data of its own.
    await vfs.remove('copy', { retain: false });
    await vfs.create(createRequest('copy', { size: 1024 }, { createdAt: new Date(Date.now() + 1000).toISOString(), createdBy: 'node-b' }));
    held.release();
    await expect(restoring).rejects.toMatchObject({
      message: expect.stringMatching(/volume copy was removed and made again since this operation made it; the volume it made is gone already/),
    });
    expect(await manager.get('copy')).toMatchObject({ name: 'copy', createdBy: 'node-b' });
    await manager.dispose();
  });
});
