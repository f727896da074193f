/**
 * Leaked mount counts against a real engine: a Mount whose answer Docker never used (as after
 * kill -9 mid-Mount) is dropped once no live container uses the volume and the grace period has
 * passed; a running container's mount is kept; `stowage release` is the manual way out. Mounts
 * stowage makes itself, a restore's and a hand mount (`stowage mount`), are never dropped.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../src/backup-targets/vfs/vfs-blob-store.js';
import { acquireLock } from '../../src/core/backup/locks.js';
import { runCli } from '../helpers/daemon-process.js';
import { startDockerNode, stopAll, type DockerNode } from '../helpers/docker-node.js';
import { pluginCall } from '../helpers/plugin-client.js';
import { checkDocker, systemSuite } from '../helpers/requirements.js';
import { startStowageInNode, type StowageInNode } from '../helpers/stowage-in-node.js';

const skip = systemSuite('docker', checkDocker());

interface MountRow { volume: string; id: string; count: number }

describe.skipIf(skip)('mount records reconciled with the local engine', { timeout: 180_000 }, () => {
  let node: DockerNode;
  let stowage: StowageInNode;
  const cli = (args: string[]) => runCli(['--socket', stowage.socket, ...args]);
  const mounts = async (): Promise<MountRow[]> => JSON.parse((await cli(['mounts', '--json'])).stdout) as MountRow[];

  beforeAll(async () => {
    node = await startDockerNode({ name: 'reconcile' });
    stowage = await startStowageInNode(node, {
      args: ['--node-id', 'rec-node', '--docker-host', node.dockerHost, '--mount-grace', '2', '--reconcile-interval', '1'],
    });
  });
  afterAll(async () => {
    await stopAll();
  });

  it('drops a leaked mount after the grace period and keeps a running container\'s', async () => {
    await node.docker(['volume', 'create', '-d', 'stowage', 'leaky']);
    await node.docker(['volume', 'create', '-d', 'stowage', 'inuse']);
    await node.docker(['run', '-d', '--name', 'user', '--network', 'none', '-v', 'inuse:/data', node.image, 'sleep', '600']);
    // What a Mount looks like whose answer Docker never got: no container behind it.
    await pluginCall(stowage.socket, 'Mount', { Name: 'leaky', ID: 'lost-to-kill-9' });
    expect((await mounts()).map((m) => m.volume).sort()).toEqual(['inuse', 'leaky']);
    await expect.poll(async () => (await mounts()).map((m) => m.volume), { timeout: 15_000, interval: 500 }).toEqual(['inuse']);
    expect(await stowage.log()).toMatch(/dropped mount record\(s\) lost-to-kill-9 of volume leaky .*no live container/);
    // The volume is free again: docker can remove it.
    await node.docker(['volume', 'rm', 'leaky']);
    // The running container's mount survived several rounds and still works.
    await node.docker(['exec', 'user', 'sh', '-c', 'echo ok > /data/f']);
  });

  it('release refuses while a running container uses the volume, and --force releases anyway', async () => {
    await pluginCall(stowage.socket, 'Mount', { Name: 'inuse', ID: 'extra' });
    const refused = await cli(['release', 'inuse', 'extra']);
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toMatch(/volume inuse is used by container user \([0-9a-f]{12}, running\) on node rec-node/);
    expect((await mounts()).filter((m) => m.id === 'extra')).toHaveLength(1);
    const forced = await cli(['release', 'inuse', 'extra', '--force']);
    expect(forced.exitCode).toBe(0);
    expect(forced.stdout).toBe('inuse extra (1)');
    expect((await mounts()).filter((m) => m.volume === 'inuse')).toHaveLength(1);
    const none = await cli(['release', 'inuse', 'no-such-id']);
    expect(none.stderr).toMatch(/no mount records of volume inuse with id no-such-id/);
    await node.docker(['rm', '-f', 'user']);
  });

  it('stowage mount holds a volume no container uses through reconciliation, until stowage umount', async () => {
    await node.docker(['volume', 'create', '-d', 'stowage', 'handheld']);
    const mounted = await cli(['mount', 'handheld']);
    expect(mounted.exitCode).toBe(0);
    const path = mounted.stdout.trim();
    await writeFile(join(path, 'from-host'), 'written through the printed path\n');
    expect((await cli(['mount', 'handheld'])).stdout.trim()).toBe(path);
    const read = await node.docker(['run', '--rm', '--network', 'none', '-v', 'handheld:/data', node.image, 'cat', '/data/from-host']);
    expect(read.stdout).toBe('written through the printed path');
    // Grace 2 s, a round every second: several rounds found no container using the volume.
    await sleep(4_000);
    expect((await mounts()).filter((m) => m.volume === 'handheld')).toEqual([expect.objectContaining({ id: 'stowage-hand-cli', count: 1 })]);
    const refused = await node.docker(['volume', 'rm', 'handheld'], { reject: false });
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr).toMatch(/mounted 1 time\(s\) on node rec-node, by hand \(label cli\); unmount it with "stowage umount handheld"/);
    const unmounted = await cli(['umount', 'handheld']);
    expect(unmounted.stdout).toBe('handheld');
    const again = await cli(['umount', 'handheld']);
    expect(again.stderr).toMatch(/holds no hand mount of volume handheld labelled cli; "stowage mounts" lists them/);
    await node.docker(['volume', 'rm', 'handheld']);
    expect(await stowage.log()).not.toMatch(/dropped mount record\(s\) stowage-hand-cli[^\n]*no live container/);
  });

  it('keeps a restore\'s own mount while the restore waits, however many rounds pass', async () => {
    await node.docker(['volume', 'create', '-d', 'stowage', 'original']);
    await node.docker(['run', '--rm', '--network', 'none', '-v', 'original:/data', node.image, 'sh', '-c', 'echo restored > /data/f']);
    const repo = join(node.dir, 'backups');
    await mkdir(repo);
    const made = await cli(['backup', 'create', 'original', '--dest', `vfs://${repo}`]);
    expect(made.exitCode).toBe(0);
    const url = made.stdout.trim().split('\n').at(-1)!;
    // A garbage collection on another node: the restore mounts its new volume, then waits for it.
    const collecting = await acquireLock(new VfsBlobStore(repo), { kind: 'exclusive', purpose: 'garbage collection', owner: 'node-b', autoRefresh: false });
    const restoring = cli(['create', 'copy', '--backup', url]);
    await expect.poll(async () => (await mounts()).some((m) => m.volume === 'copy' && m.id.startsWith('stowage-restore-')),
      { timeout: 15_000, interval: 200 }).toBe(true);
    await sleep(4_000);
    expect((await mounts()).filter((m) => m.volume === 'copy').map((m) => m.id)).toEqual([expect.stringMatching(/^stowage-restore-/)]);
    // Nor is it released by a person looking for leaked mounts.
    const released = await cli(['release', 'copy']);
    expect(released.exitCode).toBe(1);
    expect(released.stderr).toMatch(/volume copy is being restored from a backup on node rec-node; its restore's mount ends with the restore; add --force to release anyway/);
    await collecting.release();
    const restored = await restoring;
    expect(restored.exitCode, restored.stderr).toBe(0);
    expect((await mounts()).filter((m) => m.volume === 'copy')).toEqual([]);
    const read = await node.docker(['run', '--rm', '--network', 'none', '-v', 'copy:/data', node.image, 'cat', '/data/f']);
    expect(read.stdout).toBe('restored');
    expect(await stowage.log()).not.toMatch(/dropped mount record\(s\) stowage-restore-/);
  });
});
