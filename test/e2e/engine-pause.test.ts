/**
 * The Docker engine adapter's pause and unpause (what a consistent snapshot uses) against a real
 * engine: the container's state changes, and an unknown container is an error naming the call.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DockerEngine, dockerSocketPath } from '../../src/drivers/docker-engine/docker-engine.js';
import { silentLogger } from '../../src/core/logger.js';
import { startDockerNode, type DockerNode } from '../helpers/docker-node.js';
import { checkDocker, systemSuite } from '../helpers/requirements.js';

const skip = systemSuite('docker', checkDocker());

describe.skipIf(skip)('Docker engine pause/unpause', () => {
  let node: DockerNode | undefined;
  beforeAll(async () => {
    node = await startDockerNode({ name: 'pause' });
  }, 180_000);
  afterAll(async () => {
    await node?.stop();
  }, 120_000);

  it('pauses and unpauses a running container', async () => {
    const run = await node!.docker(['run', '-d', '--name', 'sleeper', node!.image, 'sleep', '600']);
    expect(run.exitCode).toBe(0);
    const id = run.stdout.trim();
    const engine = new DockerEngine(dockerSocketPath(node!.dockerHost), 'stowage', silentLogger);
    const state = async () => (await node!.docker(['inspect', '-f', '{{.State.Status}}', id])).stdout.trim();
    await engine.pause(id);
    expect(await state()).toBe('paused');
    await engine.unpause(id);
    expect(await state()).toBe('running');
    await expect(engine.pause('no-such-container')).rejects.toThrow(/HTTP 404 for POST \/containers\/no-such-container\/pause/);
  }, 60_000);
});
