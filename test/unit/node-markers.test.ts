import { describe, expect, it } from 'vitest';
import { NodeMarkers } from '../../src/core/cluster/node-markers.js';
import { silentLogger, type Logger } from '../../src/core/logger.js';
import { mountsFromRecord } from '../helpers/local-mounts.js';
import { memFs } from '../helpers/memfs-stack.js';

const dir = '/shared/cluster/mounts/node-a';

function recordingLogger(): Logger & { warnings: string[] } {
  const warnings: string[] = [];
  return { ...silentLogger, warnings, warn: (m: string) => { warnings.push(m); } };
}

describe('NodeMarkers', () => {
  it('at start, marks every mounted volume and removes markers of volumes not mounted, leaving dot files', async () => {
    const fs = memFs();
    await fs.mkdir(dir, { recursive: true });
    for (const file of ['gone', '.tmp-keep']) await (await fs.open(`${dir}/${file}`, 'w')).close();
    const markers = new NodeMarkers(fs, dir, 'node-a', silentLogger);
    await markers.sync(mountsFromRecord({ used: { m: 1 }, idle: {} }), true);
    expect((await fs.readdir(dir)).sort()).toEqual(['.tmp-keep', 'used']);
  });

  it('at a heartbeat, writes again only the vanished markers of volumes it marked and still mounts, and says so', async () => {
    const fs = memFs();
    const log = recordingLogger();
    const record: Record<string, Record<string, number>> = { kept: { m: 1 }, dropped: { m: 1 }, unmarked: { m: 1 } };
    // What a start makes: the directory of every node's markers (a mount remakes only this node's own in it).
    await fs.mkdir('/shared/cluster/mounts', { recursive: true });
    const markers = new NodeMarkers(fs, dir, 'node-a', log);
    await markers.markMounted('kept');
    await markers.markMounted('dropped');
    // A forget while this node was paused deletes the whole directory.
    await fs.rm(dir, { recursive: true });
    record.dropped = {};
    await markers.sync(mountsFromRecord(record), false);
    expect(await fs.readdir(dir)).toEqual(['kept']);
    expect(log.warnings).toEqual([expect.stringMatching(/mount marker of volume kept on node node-a had vanished/)]);
    // Rewritten once: the next heartbeat finds it present and says nothing.
    await markers.sync(mountsFromRecord(record), false);
    expect(log.warnings).toHaveLength(1);
  });

  it('an unmount removes the marker and forgets it, so a later heartbeat does not bring it back', async () => {
    const fs = memFs();
    const record: Record<string, Record<string, number>> = { vol: { m: 1 } };
    await fs.mkdir('/shared/cluster/mounts', { recursive: true });
    const markers = new NodeMarkers(fs, dir, 'node-a', silentLogger);
    await markers.markMounted('vol');
    await markers.markUnmounted('vol');
    expect(await fs.readdir(dir)).toEqual([]);
    // Still counted as mounted (an unmount racing the heartbeat): not marked again without a mount.
    await markers.sync(mountsFromRecord(record), false);
    expect(await fs.readdir(dir)).toEqual([]);
    // A second unmount of a marker already gone is fine.
    await markers.markUnmounted('vol');
  });

  it('a heartbeat keeps the marker a mount made ahead of counting itself, and removes it once that mount gave up', async () => {
    const fs = memFs();
    const record: Record<string, Record<string, number>> = {};
    const markers = new NodeMarkers(fs, dir, 'node-a', silentLogger);
    await fs.mkdir(dir, { recursive: true });
    await markers.markAhead('coming');
    await markers.sync(mountsFromRecord(record), false);
    expect(await fs.readdir(dir)).toEqual(['coming']);
    markers.doneAhead('coming');
    await markers.sync(mountsFromRecord(record), false);
    expect(await fs.readdir(dir)).toEqual([]);
  });

  it('a marker made while a heartbeat is removing a leftover marker of the same volume is made after that unlink, not lost to it', async () => {
    const base = memFs();
    let release!: () => void;
    const held = new Promise<void>((resolve) => { release = resolve; });
    let started!: () => void;
    const unlinkStarted = new Promise<void>((resolve) => { started = resolve; });
    // The heartbeat's unlink lands only once the test lets it.
    const fs = { ...base, unlink: async (path: string) => { started(); await held; return base.unlink(path); } } as typeof base;
    await fs.mkdir(dir, { recursive: true });
    // A leftover marker (an unlink that failed at an earlier unmount): nothing mounts the volume.
    await (await fs.open(`${dir}/vol`, 'w')).close();
    const markers = new NodeMarkers(fs, dir, 'node-a', silentLogger);
    const heartbeat = markers.sync(mountsFromRecord({}), false);
    await unlinkStarted;
    const mount = markers.markAhead('vol');
    release();
    await Promise.all([heartbeat, mount]);
    expect(await fs.readdir(dir)).toEqual(['vol']);
    markers.doneAhead('vol');
  });
});
