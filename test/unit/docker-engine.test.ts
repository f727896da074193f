/**
 * The engine client's reconnect path with a small stand-in engine on a unix socket (the real
 * engine is exercised in test/e2e/swarm.test.ts and mount-reconcile.test.ts): after the engine
 * goes away and comes back, the plugin is activated again.
 */
import { createServer, type Server, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DockerEngine } from '../../src/drivers/docker-engine/docker-engine.js';
import { keepPluginActivated } from '../../src/drivers/docker-engine/plugin-activation.js';
import { makeTempDir, removeTempDir } from '../helpers/daemon-process.js';
import { memoryLogger } from '../helpers/memory-logger.js';

describe('DockerEngine', () => {
  let dir: string;
  let socket: string;
  let server: Server | undefined;
  let volumeLists = 0;
  let containers: unknown = [];
  /** The open event streams, to send events on. */
  let streams: ServerResponse[] = [];

  function startEngine(): Promise<void> {
    server = createServer((req, res) => {
      if (req.url?.startsWith('/events')) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.flushHeaders();
        streams.push(res);
        return; // an event stream stays open
      }
      if (req.url === '/volumes') volumeLists += 1;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(req.url === '/volumes' ? { Volumes: [] } : containers));
    });
    return new Promise((resolve) => server!.listen(socket, () => resolve()));
  }
  async function stopEngine(): Promise<void> {
    await new Promise<void>((resolve) => { server!.close(() => resolve()); server!.closeAllConnections(); });
  }

  beforeEach(async () => {
    dir = await makeTempDir('stowage-engine-');
    socket = join(dir, 'docker.sock');
    volumeLists = 0;
    streams = [];
    await startEngine();
  });
  afterEach(async () => {
    await stopEngine().catch(() => undefined);
    await removeTempDir(dir);
  });

  it('has the engine activate the plugin at start and again after the engine came back', async () => {
    const engine = new DockerEngine(socket, 'stowage', memoryLogger(), 100);
    keepPluginActivated(engine, memoryLogger());
    await expect.poll(() => volumeLists, { timeout: 2_000 }).toBeGreaterThanOrEqual(1);
    await stopEngine();
    const before = volumeLists;
    await new Promise((r) => setTimeout(r, 300));
    await startEngine();
    await expect.poll(() => volumeLists, { timeout: 3_000 }).toBeGreaterThan(before);
    engine.stop();
  });

  it('names only valid volumes of its own driver, and reports a malformed answer as unreachable', async () => {
    containers = [
      { Id: 'c1', Names: ['/web'], State: 'running', Mounts: [
        { Type: 'volume', Name: 'data', Driver: 'stowage' },
        { Type: 'volume', Name: '../evil', Driver: 'stowage' },
        { Type: 'volume', Name: 'other', Driver: 'local' },
      ] },
    ];
    const engine = new DockerEngine(socket, 'stowage', memoryLogger());
    expect(await engine.scan()).toEqual({ reachable: true, byVolume: { data: [{ id: 'c1', name: 'web', state: 'running' }] } });
    containers = { not: 'a list' };
    expect(await engine.scan()).toMatchObject({ reachable: false, error: expect.stringMatching(/container list is not in the expected format/) });
  });

  it('gives a change mark only while its event stream is connected and settled, and a new one for every event', async () => {
    const engine = new DockerEngine(socket, 'stowage', memoryLogger(), 100, 1_000);
    expect(engine.changeMark()).toBeUndefined();
    engine.onEvent(() => undefined);
    await expect.poll(() => streams.length, { timeout: 2_000 }).toBe(1);
    // Connected, but the engine may not have subscribed the stream yet.
    expect(engine.changeMark()).toBeUndefined();
    await expect.poll(() => engine.changeMark(), { timeout: 2_000 }).toBeDefined();
    const settled = engine.changeMark();
    expect(engine.changeMark()).toBe(settled);
    streams[0]!.write('{"Type":"container","Action":"create"}\n');
    await expect.poll(() => engine.changeMark(), { timeout: 2_000 }).not.toBe(settled);
    const afterEvent = engine.changeMark();
    expect(afterEvent).toBeDefined();
    // The stream ends (an engine restart): no mark until a new stream has settled, and never an old one.
    streams[0]!.end();
    await expect.poll(() => engine.changeMark(), { timeout: 2_000 }).toBeUndefined();
    await expect.poll(() => streams.length, { timeout: 2_000 }).toBe(2);
    await expect.poll(() => engine.changeMark(), { timeout: 2_000 }).toBeDefined();
    expect([settled, afterEvent]).not.toContain(engine.changeMark());
    engine.stop();
  });
});
