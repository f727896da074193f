/**
 * A remove asks the local engine which containers use the volume, or trusts the engine's last
 * answer while the engine's event stream reports no container change since: against a real
 * engine, a container made a moment after a remove that asked must still block the next remove.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDockerNode, stopAll, type DockerNode } from '../helpers/docker-node.js';
import { pluginCall } from '../helpers/plugin-client.js';
import { checkDocker, systemSuite } from '../helpers/requirements.js';
import { startStowageInNode, type StowageInNode } from '../helpers/stowage-in-node.js';

const skip = systemSuite('docker', checkDocker());

describe.skipIf(skip)('a remove right after a container change on this node', { timeout: 120_000 }, () => {
  let node: DockerNode;
  let stowage: StowageInNode;

  beforeAll(async () => {
    node = await startDockerNode({ name: 'rmscan' });
    stowage = await startStowageInNode(node, { args: ['--node-id', 'rs', '--docker-host', node.dockerHost] });
  });
  afterAll(async () => {
    await stopAll();
  });

  it('is refused for a container made a moment ago, and let through once it is gone', async () => {
    for (const name of ['first', 'second']) await node.docker(['volume', 'create', '-d', 'stowage', name]);
    // The daemon trusts its event stream only a second after connecting it (at its start).
    await sleep(1_500);
    // Straight to the plugin socket, as a CLI remove reaches the daemon: the engine's own check
    // (it never calls Remove for a volume its containers use) is not in the way.
    expect((await pluginCall(stowage.socket, 'Remove', { Name: 'first' })).Err ?? '').toBe('');
    await node.docker(['create', '--name', 'holder', '--network', 'none', '-v', 'second:/data', node.image, 'true']);
    const refused = await pluginCall(stowage.socket, 'Remove', { Name: 'second' });
    expect(refused.Err).toMatch(/volume second is still used on rs \(this node\): container holder \([0-9a-f]{12}, created\)/);
    await node.docker(['rm', 'holder']);
    expect((await pluginCall(stowage.socket, 'Remove', { Name: 'second' })).Err ?? '').toBe('');
    expect((await pluginCall(stowage.socket, 'Get', { Name: 'second' })).Err).toMatch(/no volume|not found|does not exist/i);
  });
});
