/**
 * A backup or snapshot reading a volume's live data on one node of a shared vfs store, seen from
 * another: the read shows the volume in use there, as a mount does, so a remove on the other
 * node is refused until the read ends (it would otherwise delete the data under the read, and
 * the backup would be recorded complete with part of the files).
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { buildContainer } from '../../src/container.js';
import { ErrorCodes } from '../../src/core/errors.js';
import { TOKENS } from '../../src/core/tokens.js';
import type { VolumeManager } from '../../src/core/volume-manager.js';
import { memoryLogger } from '../helpers/memory-logger.js';

describe('a read of a volume\'s live data on one node of a shared vfs store', () => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function twoNodes() {
    const base = await mkdtemp(join(tmpdir(), 'stowage-read-sharing-'));
    cleanups.push(() => rm(base, { recursive: true, force: true }));
    await mkdir(join(base, 'store'));
    const node = async (nodeId: string) => {
      const manager = buildContainer({
        backend: 'vfs', backendOptions: { 'vfs.path': join(base, 'store'), 'vfs.shared': 'true' }, root: join(base, `root-${nodeId}`),
        nodeId, onRemove: 'delete', logger: memoryLogger(), cluster: { heartbeatMs: 100, staleAfterMs: 5_000 },
      }).get<VolumeManager>(TOKENS.VolumeManager);
      await manager.init();
      cleanups.push(() => manager.dispose());
      return manager;
    };
    return { a: await node('node-a'), b: await node('node-b') };
  }

  /** Starts a read on `manager` that holds until `release()`; `reading` resolves once it runs. */
  function heldRead(manager: VolumeManager, volume: string) {
    let release!: () => void;
    let reached!: () => void;
    const reading = new Promise<void>((r) => { reached = r; });
    const released = new Promise<void>((r) => { release = r; });
    const done = manager.readLiveVolume(volume, {}, async (path) => {
      reached();
      await released;
      return path;
    });
    return { reading, release, done };
  }

  it('makes a remove on another node refused until it ends, heartbeats and unmounts meanwhile included', async () => {
    const { a, b } = await twoNodes();
    await a.create('data');
    const path = await a.mount('data', 'container-1');
    await writeFile(join(path, 'file'), 'precious');
    const read = heldRead(a, 'data');
    await read.reading;
    // The container's mount ends during the read, and heartbeats pass: the read alone holds the volume.
    await a.unmount('data', 'container-1');
    await sleep(350);
    await expect(b.remove('data')).rejects.toMatchObject({
      code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/^volume data is still used on node-a: /),
    });
    read.release();
    expect(await read.done).toBe(path);
    // Nothing uses it any more on node a: node b removes it.
    await b.remove('data');
    expect(await a.listBrief()).toEqual([]);
  });

  it('shows a volume mounted nowhere in use while it is read', async () => {
    const { a, b } = await twoNodes();
    await a.create('cold');
    const read = heldRead(a, 'cold');
    await read.reading;
    await expect(b.remove('cold')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/^volume cold is still used on node-a: /) });
    read.release();
    await read.done;
    await b.remove('cold');
  });

  it('does not start on a volume another node removed: the read finds it gone', async () => {
    const { a, b } = await twoNodes();
    await a.create('gone');
    await b.remove('gone');
    await expect(a.readLiveVolume('gone', {}, async () => 'read')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_NOT_FOUND });
  });
});
