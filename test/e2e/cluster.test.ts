/**
 * Two Docker engines and two stowage daemons on one machine sharing storage (a vfs directory,
 * then a gluster pool): the cross-node failures Convoy let through, step by step.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/daemon-process.js';
import { startDockerNode, stopAll, type DockerNode } from '../helpers/docker-node.js';
import { listedNames, pluginCall } from '../helpers/plugin-client.js';
import { startGlusterd, type Glusterd } from '../helpers/glusterd.js';
import { checkDocker, checkGluster, findExecutable, systemSuite } from '../helpers/requirements.js';
import { startStowageInNode, type StowageInNode } from '../helpers/stowage-in-node.js';

const docker = checkDocker();
const skip = systemSuite('docker + faketime', findExecutable('faketime')
  ? docker : { ok: false, why: 'faketime is missing (apt-get install -y faketime)' });
const skipGluster = skip || systemSuite('glusterfs', checkGluster());

/** One kind of storage both nodes share, and the daemon options that point at it. */
interface SharedStorage {
  label: string;
  skip: boolean;
  setup(): Promise<string[]>;
  teardown(): Promise<void>;
  /** Drops what a stopped daemon left mounted in its node, so its successor mounts afresh. */
  unmountLeftovers?(node: DockerNode, root: string): Promise<void>;
}

const vfsStorage = (): SharedStorage => {
  let dir = '';
  return {
    label: 'a vfs directory',
    skip,
    setup: async () => {
      dir = await mkdtemp(join(tmpdir(), 'stowage-shared-'));
      return ['--opt', `vfs.path=${dir}`, '--opt', 'vfs.shared=true'];
    },
    teardown: () => rm(dir, { recursive: true, force: true }),
  };
};

const glusterStorage = (): SharedStorage => {
  let gd: Glusterd | undefined;
  return {
    label: 'a gluster pool',
    skip: skipGluster,
    setup: async () => {
      gd = await startGlusterd();
      await gd.createVolume({ name: 'clusterpool', bricks: 2, replica: 2 });
      return ['--backend', 'glusterfs', '--opt', `glusterfs.servers=${gd.host}`, '--opt', 'glusterfs.pool=clusterpool',
        '--opt', `glusterfs.glusterdsocket=${gd.socket}`];
    },
    teardown: async () => { await gd?.stop(); },
    // The pool's FUSE client outlives the daemon; a daemon with a skewed clock must run its own.
    unmountLeftovers: async (node, root) => {
      await node.execInNamespace(['umount', '-l', join(root, 'glusterfs', 'mnt', 'clusterpool')]);
    },
  };
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const STALE_AFTER_S = 3;

describe.each([vfsStorage(), glusterStorage()])('two nodes sharing $label', (storage) => {
 describe.skipIf(storage.skip)('', { timeout: 120_000 }, () => {
  let storageArgs: string[] = [];
  const nodes: DockerNode[] = [];
  const daemons: StowageInNode[] = [];

  async function startStowage(i: number, extra: { wrapper?: string[]; env?: Record<string, string> } = {}) {
    const node = nodes[i]!;
    daemons[i] = await startStowageInNode(node, {
      args: ['--node-id', `n${i + 1}`, ...storageArgs,
        '--docker-host', node.dockerHost, '--heartbeat-interval', '0.5', '--stale-after', String(STALE_AFTER_S)],
      logName: `stowage-${Date.now()}`,
      ...extra,
    });
  }
  const run = (i: number, args: string[], reject = true) =>
    nodes[i]!.docker(['run', '--network', 'none', ...args], { reject });
  const cli = (i: number, args: string[]) => runCli(['--socket', daemons[i]!.socket, ...args]);
  const usedBy = async (i: number, name: string) =>
    (JSON.parse((await nodes[i]!.docker(['volume', 'inspect', name])).stdout)[0].Status as { usedBy: string }).usedBy;
  async function until(check: () => Promise<boolean>, ms = 10_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error('condition not reached in time');
      await sleep(200);
    }
  }

  beforeAll(async () => {
    storageArgs = await storage.setup();
    nodes.push(...await Promise.all([startDockerNode({ name: 'c1' }), startDockerNode({ name: 'c2' })]));
    await Promise.all([startStowage(0), startStowage(1)]);
  });
  afterAll(async () => {
    // Nodes first: their namespaces hold the storage's mounts.
    await stopAll();
    nodes.splice(0);
    await storage.teardown();
  });

  it('refuses a remove while a stopped container on the other node references the volume, then lets it through', async () => {
    await nodes[0]!.docker(['volume', 'create', '-d', 'stowage', 'shared-vol']);
    expect((await nodes[1]!.docker(['volume', 'ls', '-q'])).stdout.split('\n')).toContain('shared-vol');
    await run(0, ['--name', 'c-one', '-v', 'shared-vol:/data', nodes[0]!.image, 'sh', '-c', 'echo one > /data/one']);
    await run(1, ['--name', 'c-two', '-v', 'shared-vol:/data', nodes[1]!.image, 'sh', '-c', 'echo two > /data/two']);
    await nodes[0]!.docker(['rm', 'c-one']);
    // Node two publishes what its engine reports within a heartbeat or an engine event.
    await until(async () => /c-two \([0-9a-f]{12}, exited\)/.test(await usedBy(0, 'shared-vol')));

    const refused = await nodes[0]!.docker(['volume', 'rm', 'shared-vol'], { reject: false });
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr).toMatch(/still used on n2: container c-two \([0-9a-f]{12}, exited\)/);
    expect(refused.stderr).toMatch(/docker rm/);
    expect(await usedBy(0, 'shared-vol')).toMatch(/^n2: container c-two/);

    // Node two's engine stops: node two goes on publishing the containers it last listed, so the
    // remove stays refused rather than finding none.
    await nodes[1]!.stopEngine();
    try {
      await until(async () => /^n2\s.*unreachable \(containers as of /m.test((await cli(0, ['node', 'list'])).stdout));
      const stillRefused = await nodes[0]!.docker(['volume', 'rm', 'shared-vol'], { reject: false });
      expect(stillRefused.exitCode).not.toBe(0);
      expect(stillRefused.stderr).toMatch(/still used on n2: container c-two \([0-9a-f]{12}, exited\)/);
    } finally {
      await nodes[1]!.startEngine();
    }

    await nodes[1]!.docker(['rm', 'c-two']);
    const started = Date.now();
    let removed = false;
    while (!removed && Date.now() - started < 15_000) {
      removed = (await nodes[0]!.docker(['volume', 'rm', 'shared-vol'], { reject: false })).exitCode === 0;
      if (!removed) await sleep(250);
    }
    expect(removed).toBe(true);
    expect(Date.now() - started).toBeLessThan(10_000);

    // Node two can make a volume of that name again, and it is empty.
    await nodes[1]!.docker(['volume', 'create', '-d', 'stowage', 'shared-vol']);
    expect((await run(1, ['--rm', '-v', 'shared-vol:/data', nodes[1]!.image, 'ls', '-A', '/data'])).stdout).toBe('');
    await nodes[1]!.docker(['volume', 'rm', 'shared-vol']);
  });

  it('reports a node killed while holding a volume as stale, refuses, and lets the delete through after node forget', async () => {
    await nodes[0]!.docker(['volume', 'create', '-d', 'stowage', 'kill-vol']);
    await run(1, ['-d', '--name', 'holder', '-v', 'kill-vol:/data', nodes[1]!.image, 'sleep', '300']);
    // Kill node two only once node one has seen its mount and running container.
    await until(async () => /n2: mounted, container holder \([0-9a-f]{12}, running\)/.test(await usedBy(0, 'kill-vol')));
    await daemons[1]!.stop('SIGKILL');
    try {
      await sleep(STALE_AFTER_S * 1000 + 1500);
      const nodesList = await cli(0, ['node', 'list']);
      expect(nodesList.stdout).toMatch(/^n2\s.*\sstale\s/m);
      const refused = await nodes[0]!.docker(['volume', 'rm', 'kill-vol'], { reject: false });
      expect(refused.exitCode).not.toBe(0);
      expect(refused.stderr).toMatch(/stopped sending heartbeats: n2 \(last heartbeat \d+ s ago\): mounted, container holder/);
      expect(refused.stderr).toMatch(/stowage node forget n2/);

      const forgot = await cli(0, ['node', 'forget', 'n2']);
      expect(forgot.exitCode).toBe(0);
      await nodes[0]!.docker(['volume', 'rm', 'kill-vol']);
      expect(await listedNames(daemons[0]!.socket)).not.toContain('kill-vol');
    } finally {
      // Restart node two's daemon first, so Docker's Unmount for the dead mount gets an answer.
      await startStowage(1);
      await nodes[1]!.docker(['rm', '-f', 'holder']);
    }
  });

  it('20 concurrent creates of one name over both nodes make one volume, without errors', async () => {
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) =>
      nodes[i % 2]!.docker(['volume', 'create', '-d', 'stowage', '-o', 'size=10M', 'race-vol'], { reject: false })));
    expect(results.filter((r) => r.exitCode !== 0).map((r) => r.stderr)).toEqual([]);
    for (const i of [0, 1]) {
      expect((await nodes[i]!.docker(['volume', 'ls', '-q'])).stdout.split('\n').filter((n) => n === 'race-vol')).toHaveLength(1);
      expect((await listedNames(daemons[i]!.socket)).filter((n) => n === 'race-vol')).toHaveLength(1);
    }
    // Docker answers a create of a name it knows from its own records; ask stowage directly.
    const conflict = await cli(1, ['create', 'race-vol', '--size', '20M']);
    expect(conflict.exitCode).toBe(1);
    expect(conflict.stderr).toMatch(/already exists with different options \(size=10MiB\)/);
    await nodes[0]!.docker(['volume', 'rm', 'race-vol']);
  });

  it('agrees on creation times when one node\'s clock is hours off, and reports the skew', async () => {
    await daemons[1]!.stop();
    await storage.unmountLeftovers?.(nodes[1]!, daemons[1]!.root);
    // Everything the skewed daemon starts (a gluster client, say) runs on the skewed clock too, as on a real host.
    await startStowage(1, { wrapper: ['faketime', '-f', '+3h'], env: { FAKETIME_DONT_FAKE_MONOTONIC: '1' } });
    await nodes[1]!.docker(['volume', 'create', '-d', 'stowage', 'made-on-skewed']);
    await nodes[0]!.docker(['volume', 'create', '-d', 'stowage', 'made-on-sane']);
    const createdAt = async (i: number, name: string) =>
      Date.parse(((await pluginCall(daemons[i]!.socket, 'Get', { Name: name })).Volume as { CreatedAt: string }).CreatedAt);
    const now = Date.now();
    for (const name of ['made-on-skewed', 'made-on-sane']) {
      for (const i of [0, 1]) expect(Math.abs((await createdAt(i, name)) - now)).toBeLessThan(30_000);
    }
    await sleep(1200);
    const listed = await cli(0, ['node', 'list', '--json']);
    const skewed = (JSON.parse(listed.stdout) as Array<{ record: { nodeId: string; clockOffsetMs: number } }>)
      .find((n) => n.record.nodeId === 'n2')!;
    expect(Math.abs(skewed.record.clockOffsetMs - 3 * 3600_000)).toBeLessThan(30_000);
    const info = JSON.parse((await cli(1, ['info'])).stdout) as Record<string, string>;
    expect(info.clockSkew).toMatch(/this node's clock is 108\d\d s off the shared storage's clock/);
    // The other node learns the skew from n2's record at its next refresh (a heartbeat), not at once.
    await expect.poll(async () => JSON.parse((await cli(0, ['info'])).stdout).skewedNodes as string, { timeout: 20_000, interval: 500 })
      .toMatch(/^n2 \(108\d\d s\)$/);
    await nodes[0]!.docker(['volume', 'rm', 'made-on-skewed']);
    await nodes[1]!.docker(['volume', 'rm', 'made-on-sane']);
  });
});
});
