/**
 * Swarm schedules a service with a stowage volume only on nodes whose engine reports the
 * plugin, and an engine reports a legacy plugin only once it was activated. The daemon has its
 * engine activate it as soon as it serves: a service created right after the daemon starts,
 * with no docker volume command before, must run and write its data.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDockerNode, stopAll, type DockerNode } from '../helpers/docker-node.js';
import { pluginCall } from '../helpers/plugin-client.js';
import { checkDocker, systemSuite } from '../helpers/requirements.js';
import { startStowageInNode, type StowageInNode } from '../helpers/stowage-in-node.js';

const skip = systemSuite('docker', checkDocker());
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(skip)('a Swarm service with a stowage volume', { timeout: 240_000 }, () => {
  let node: DockerNode;
  let stowage: StowageInNode;

  beforeAll(async () => {
    node = await startDockerNode({ name: 'swarm' });
    await node.docker(['swarm', 'init', '--advertise-addr', '127.0.0.1']);
  });
  afterAll(async () => {
    await node?.docker(['service', 'rm', 'sv-writer'], { reject: false });
    await sleep(1_000);
    await stowage?.stop();
    await stopAll();
  });

  it('runs on a node whose daemon just started, without any docker volume command first', async () => {
    stowage = await startStowageInNode(node, { args: ['--node-id', 'swarm-node', '--docker-host', node.dockerHost] });
    const started = Date.now();
    await node.docker(['service', 'create', '--detach', '--name', 'sv-writer', '--restart-condition', 'none',
      '--mount', 'type=volume,source=sv,destination=/data,volume-driver=stowage',
      node.image, 'sh', '-c', 'echo written by a swarm task > /data/hello; sleep 600']);
    let states = '';
    for (;;) {
      states = (await node.docker(['service', 'ps', 'sv-writer', '--no-trunc', '--format', '{{.CurrentState}} {{.Error}}'])).stdout;
      if (/^Running/m.test(states)) break;
      if (Date.now() - started > 90_000) throw new Error(`the task is not Running after 90 s:\n${states}\n${await stowage.log()}`);
      await sleep(1_000);
    }
    const elapsed = Date.now() - started;
    const container = (await node.docker(['ps', '-q', '--filter', 'label=com.docker.swarm.service.name=sv-writer'])).stdout.trim();
    await expect.poll(async () => (await node.docker(['exec', container, 'cat', '/data/hello'], { reject: false })).stdout,
      { timeout: 10_000 }).toBe('written by a swarm task');
    const plugins = (await node.docker(['node', 'inspect', 'self', '--format', '{{json .Description.Engine.Plugins}}'])).stdout;
    expect(plugins).toContain('"Type":"Volume","Name":"stowage"');
    const volume = (await pluginCall(stowage.socket, 'Get', { Name: 'sv' })).Volume as { Status: Record<string, string> };
    expect(volume.Status.mounts).toBe('1');
    process.stderr.write(`[swarm] task Running ${elapsed} ms after the service was created\n`);
  });
});
