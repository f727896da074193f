/**
 * stowage's glusterfs backend under two real Docker engines ("nodes") sharing one gluster pool
 * served by the test's private glusterd. Each node's stowage daemon runs in that node's mount
 * namespace, so the FUSE mount of the pool it makes is the one its dockerd sees.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDockerNode, stopAll, type DockerNode } from '../helpers/docker-node.js';
import { assertCliBuilt } from '../helpers/daemon-process.js';
import { startGlusterd, type Glusterd } from '../helpers/glusterd.js';
import { statfsSizeOf } from '../helpers/gluster-backend.js';
import { pluginCall } from '../helpers/plugin-client.js';
import { checkDocker, checkGluster, systemSuite } from '../helpers/requirements.js';
import { startStowageInNode, type StowageInNode } from '../helpers/stowage-in-node.js';

const skip = systemSuite('docker', checkDocker()) || systemSuite('glusterfs', checkGluster());
const POOL = 'e2epool';

interface Inspected { Driver: string; Scope: string; Status: Record<string, string> }

describe.skipIf(skip)('glusterfs volumes shared by two Docker nodes', { timeout: 180_000 }, () => {
  let gd: Glusterd;
  let nodeA: DockerNode;
  let nodeB: DockerNode;
  let stowageA: StowageInNode;
  let stowageB: StowageInNode;
  const daemonArgs = (nodeId: string, node: DockerNode) => [
    '--node-id', nodeId, '--backend', 'glusterfs', '--docker-host', node.dockerHost, '--heartbeat-interval', '0.5',
    '--opt', `glusterfs.servers=${gd.host}`, '--opt', `glusterfs.defaultvolumepool=${POOL}`,
    '--opt', `glusterfs.glusterdsocket=${gd.socket}`,
  ];
  const inspect = async (node: DockerNode, name: string) =>
    (JSON.parse((await node.docker(['volume', 'inspect', name])).stdout) as Inspected[])[0]!;
  const run = (node: DockerNode, args: string[]) => node.docker(['run', '--rm', '--network', 'none', ...args]);
  const mountFlag = (name: string) => ['--mount', `type=volume,source=${name},target=/data,volume-driver=stowage`];
  /** Node a publishes its containers in its node record in the pool; wait until node b reads it. */
  const usedByOnB = async (name: string) => {
    const deadline = Date.now() + 20_000;
    let usedBy = '';
    while (Date.now() < deadline) {
      const reply = await pluginCall(stowageB.socket, 'Get', { Name: name });
      usedBy = String((reply.Volume as { Status?: Record<string, string> } | undefined)?.Status?.usedBy ?? '');
      if (usedBy.includes('node-a')) return usedBy;
      await new Promise((r) => setTimeout(r, 250));
    }
    return usedBy;
  };

  beforeAll(async () => {
    assertCliBuilt();
    const t0 = Date.now();
    gd = await startGlusterd();
    await gd.createVolume({ name: POOL, bricks: 2, replica: 2 });
    const t1 = Date.now();
    [nodeA, nodeB] = await Promise.all([startDockerNode({ name: 'gla' }), startDockerNode({ name: 'glb' })]);
    const t2 = Date.now();
    stowageA = await startStowageInNode(nodeA, { args: daemonArgs('node-a', nodeA) });
    stowageB = await startStowageInNode(nodeB, { args: daemonArgs('node-b', nodeB) });
    process.stderr.write(`[glusterfs e2e] glusterd + pool ${t1 - t0} ms, two docker nodes ${t2 - t1} ms, ` +
      `two stowage daemons ${Date.now() - t2} ms\n`);
  });
  afterAll(async () => {
    // Nodes first: their namespaces hold the FUSE clients of the pool.
    await stopAll();
    await gd?.stop();
  });

  it('docker volume create -o size=50M makes a global volume with a gluster directory quota', async () => {
    await nodeA.docker(['volume', 'create', '-d', 'stowage', '-o', 'size=50M', 'shared-data']);
    const volume = await inspect(nodeA, 'shared-data');
    expect(volume).toMatchObject({ Driver: 'stowage', Scope: 'global' });
    expect(volume.Status).toMatchObject({
      backend: 'glusterfs', size: '50MiB', createdBy: 'node-a', glusterVolume: POOL, glusterPath: '/shared-data', quotaLimit: '50MiB',
    });
    expect(await statfsSizeOf(gd, POOL, '/shared-data')).toBe(52428800);
  });

  it('a container on node a writes through the gluster mount and sees the quota as its disk size', async () => {
    const out = await run(nodeA, [...mountFlag('shared-data'), nodeA.image, 'sh', '-c',
      'echo written on node a > /data/greeting && dd if=/dev/zero of=/data/blob bs=1024 count=2048 2>/dev/null && df -k /data | tail -1']);
    // df's second column is the size in KiB: 50 MiB, the quota, not the pool's capacity.
    expect(out.stdout.trim().split(/\s+/)[1]).toBe('51200');
    // The file is in gluster (both replica bricks), not in a directory of node a.
    const bricks = await gd.xml(['volume', 'info', POOL]);
    expect(bricks).toContain('<replicaCount>2</replicaCount>');
  });

  it('node b lists the volume, a container there reads the data, and inspect shows the usage', async () => {
    const ls = await nodeB.docker(['volume', 'ls', '--format', '{{.Driver}} {{.Name}}']);
    expect(ls.stdout.split('\n')).toContain('stowage shared-data');
    const read = await run(nodeB, [...mountFlag('shared-data'), nodeB.image, 'cat', '/data/greeting']);
    expect(read.stdout).toBe('written on node a');
    const status = (await inspect(nodeB, 'shared-data')).Status;
    expect(status).toMatchObject({ createdBy: 'node-a', quotaLimit: '50MiB' });
    expect(status.quotaUsed).toMatch(/^(2(\.\d+)?|[3-9](\.\d+)?)MiB$/);
    const fromPlugin = await pluginCall(stowageB.socket, 'Get', { Name: 'shared-data' });
    expect(JSON.stringify(fromPlugin)).not.toMatch(/warning/);
  });

  it('node b cannot remove the volume while a container on node a references it (cluster state in the pool)', async () => {
    await nodeA.docker(['create', '--name', 'keeper', '--network', 'none', ...mountFlag('shared-data'), nodeA.image, 'true']);
    expect(await usedByOnB('shared-data')).toMatch(/^node-a: container keeper/);
    const refused = await nodeB.docker(['volume', 'rm', 'shared-data'], { reject: false });
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr).toMatch(/still used on node-a: container keeper \([0-9a-f]{12}, created\)/);
    await nodeA.docker(['rm', 'keeper']);
  });

  it('docker volume rm on node b deletes it for both nodes; a re-created volume starts empty', async () => {
    // keeper was removed on node a just before; node b learns it with node a's next record update.
    const deadline0 = Date.now() + 15_000;
    let removed = await nodeB.docker(['volume', 'rm', 'shared-data'], { reject: false });
    while (removed.exitCode !== 0 && /still used on node-a/.test(removed.stderr) && Date.now() < deadline0) {
      await new Promise((r) => setTimeout(r, 250));
      removed = await nodeB.docker(['volume', 'rm', 'shared-data'], { reject: false });
    }
    expect(removed.stderr).toBe('');
    const listed = async () => (await pluginCall(stowageA.socket, 'List', {})).Volumes as Array<{ Name: string }>;
    const deadline = Date.now() + 5_000;
    while ((await listed()).some((v) => v.Name === 'shared-data') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    expect((await listed()).map((v) => v.Name)).not.toContain('shared-data');
    await nodeB.docker(['volume', 'create', '-d', 'stowage', 'shared-data']);
    const listing = await run(nodeA, [...mountFlag('shared-data'), nodeA.image, 'ls', '-A', '/data']);
    expect(listing.stdout).toBe('');
  });

  it('with the pool stopped, docker volume create, rm and run say so and how to start it; all works once it runs', async () => {
    await gd.stopVolume(POOL);
    const stopped = (volume: string) => new RegExp(`the pool volume ${POOL} is stopped, not started, so volume ${volume} cannot be ` +
      `reached on node node-a; start it: gluster volume start ${POOL}`);
    try {
      const created = await nodeA.docker(['volume', 'create', '-d', 'stowage', 'while-stopped'], { reject: false });
      expect(created.exitCode).not.toBe(0);
      expect(created.stderr).toMatch(stopped('while-stopped'));
      expect(created.stderr).not.toMatch(/internal error|ENOENT|ENOTCONN/);
      const ran = await nodeA.docker(['run', '--rm', '--network', 'none', ...mountFlag('shared-data'), nodeA.image, 'true'], { reject: false });
      expect(ran.exitCode).not.toBe(0);
      expect(ran.stderr).toMatch(stopped('shared-data'));
      const removed = await nodeA.docker(['volume', 'rm', 'shared-data'], { reject: false });
      expect(removed.exitCode).not.toBe(0);
      expect(removed.stderr).toMatch(stopped('shared-data'));
    } finally {
      await gd.startVolume(POOL);
    }
    await nodeA.docker(['volume', 'create', '-d', 'stowage', 'while-stopped']);
    expect((await run(nodeA, [...mountFlag('shared-data'), nodeA.image, 'ls', '-A', '/data'])).stdout).toBe('');
    expect((await nodeA.docker(['volume', 'rm', 'while-stopped'])).stderr).toBe('');
  });
});
