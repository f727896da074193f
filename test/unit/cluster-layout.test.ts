/**
 * Cluster layout 2 (node records in members/, mount markers in mounts/<node>/<volume>) and the
 * way it meets layout 1 (a nodes/ directory of records holding the mounts), on a real directory:
 * what an older daemon does at start depends on the kernel's mkdir.
 */
import * as fsp from 'node:fs/promises';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SharedClock } from '../../src/core/clock.js';
import { DEFAULT_CLUSTER_SETTINGS, type ClusterSettings } from '../../src/core/cluster/cluster.js';
import { mountsFromRecord } from '../helpers/local-mounts.js';
import { SharedCluster } from '../../src/core/cluster/shared-cluster.js';
import { ErrorCodes } from '../../src/core/errors.js';
import type { FsPort } from '../../src/core/fs-port.js';
import { silentLogger } from '../../src/core/logger.js';

const settings = (extra: Partial<ClusterSettings> = {}): ClusterSettings => ({
  ...DEFAULT_CLUSTER_SETTINGS, heartbeatMs: 60_000, staleAfterMs: 30_000, version: 'test', ...extra,
});

const legacyRecord = (nodeId: string, mounts: Record<string, Record<string, number>>) => JSON.stringify({
  format: 1, nodeId, version: '0.0.9', host: nodeId, pid: 1, startedAt: 'then', clockOffsetMs: 0, mounts, containers: {},
  docker: { reachable: false },
});

describe('cluster layout 2 beside layout 1', () => {
  const cleanups: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function clusterDir(): Promise<string> {
    const base = await mkdtemp(join(tmpdir(), 'stowage-layout-'));
    cleanups.push(() => rm(base, { recursive: true, force: true }));
    return join(base, 'cluster');
  }

  async function start(dir: string, id: string, mounts: Record<string, Record<string, number>> = {}): Promise<SharedCluster> {
    const cluster = new SharedCluster(fsp as unknown as FsPort, dir, id, new SharedClock(), settings(), silentLogger);
    await cluster.start(mountsFromRecord(mounts));
    cleanups.push(() => cluster.stop());
    return cluster;
  }

  it('a fresh cluster gets the nodes file, so a layout-1 daemon (mkdir -p nodes) fails to start', async () => {
    const dir = await clusterDir();
    await start(dir, 'node-a', { vol: { m: 1 } });
    expect((await stat(join(dir, 'nodes'))).isFile()).toBe(true);
    expect(await readFile(join(dir, 'nodes'), 'utf8')).toMatch(/layout 2/);
    // What a layout-1 daemon does first, in SharedCluster.start and in the vfs backend's checks.
    await expect(mkdir(join(dir, 'nodes'), { recursive: true })).rejects.toMatchObject({ code: 'EEXIST' });
    expect(await readdir(join(dir, 'mounts', 'node-a'))).toEqual(['vol']);
    expect(JSON.parse(await readFile(join(dir, 'members', 'node-a.json'), 'utf8'))).toMatchObject({ format: 2, nodeId: 'node-a' });
  });

  it('refuses to start beside a live layout-1 node, and changes nothing', async () => {
    const dir = await clusterDir();
    await mkdir(join(dir, 'nodes'), { recursive: true });
    await writeFile(join(dir, 'nodes', 'old.json'), legacyRecord('old', { vol: { m: 1 } }));
    const cluster = new SharedCluster(fsp as unknown as FsPort, dir, 'node-a', new SharedClock(), settings(), silentLogger);
    await expect(cluster.start(mountsFromRecord({}))).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/node old runs stowage 0\.0\.9, which keeps its mounts in .*layout 1.*upgrade or stop/),
    });
    await cluster.stop();
    expect(await readdir(join(dir, 'nodes'))).toEqual(['old.json']);
    expect(await readdir(join(dir, 'mounts'))).toEqual([]);
  });

  it('migrates a stale layout-1 record: its mounts become markers that still refuse a remove until it is forgotten', async () => {
    const dir = await clusterDir();
    await mkdir(join(dir, 'nodes'), { recursive: true });
    const anHourAgo = new Date(Date.now() - 3_600_000);
    await writeFile(join(dir, 'nodes', 'crashed.json'), legacyRecord('crashed', { held: { m: 2 }, released: { m: 0 } }));
    await utimes(join(dir, 'nodes', 'crashed.json'), anHourAgo, anHourAgo);
    // This node's own layout-1 record from its previous run: its mounts come from its mount table.
    await writeFile(join(dir, 'nodes', 'node-a.json'), legacyRecord('node-a', { old: { m: 1 } }));
    const a = await start(dir, 'node-a');
    expect((await stat(join(dir, 'nodes'))).isFile()).toBe(true);
    const aside = (await readdir(dir)).filter((f) => f.startsWith('nodes.layout1-'));
    expect(aside).toHaveLength(1);
    expect((await readdir(join(dir, aside[0]!))).sort()).toEqual(['crashed.json', 'node-a.json']);
    expect(await readdir(join(dir, 'mounts', 'crashed'))).toEqual(['held']);
    expect(await readdir(join(dir, 'mounts', 'node-a'))).toEqual([]);
    // The migrated record keeps its old heartbeat: the node stays stale.
    expect(Math.abs((await stat(join(dir, 'members', 'crashed.json'))).mtimeMs - anHourAgo.getTime())).toBeLessThan(1000);
    const err = await a.assertRemovable('held', { force: false }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCodes.VOLUME_IN_USE, remedies: [{ action: 'forget-node', node: 'crashed' }, { action: 'force-remove', volume: 'held' }] });
    expect((err as Error).message).toMatch(/crashed \(last heartbeat \d+ s ago\): mounted/);
    await a.assertRemovable('released', { force: false });
    await a.assertRemovable('old', { force: false });
    await a.forget('crashed');
    await a.assertRemovable('held', { force: false });
    // A second node of layout 2 finds the file and starts normally.
    await start(dir, 'node-b');
    expect((await a.nodes()).map((n) => n.record.nodeId)).toEqual(['node-a', 'node-b']);
  });
});
