/**
 * The composition root: backends chosen by name from their modules, the engine adapter bound as
 * the core's ContainerReferences port, and shells and test overrides given as modules.
 */
import { ContainerModule } from 'inversify';
import { describe, expect, it } from 'vitest';
import { buildContainer } from '../../src/container.js';
import type { Backend } from '../../src/core/backend.js';
import { ExecaCommandRunner } from '../../src/core/command-runner.js';
import type { ContainerReferences, ContainerScan } from '../../src/core/container-references.js';
import { ErrorCodes } from '../../src/core/errors.js';
import { silentLogger } from '../../src/core/logger.js';
import { TOKENS } from '../../src/core/tokens.js';
import type { VolumeManager } from '../../src/core/volume-manager.js';
import { backendModule, backendNames } from '../../src/backends/registry.js';
import type { BackendContext } from '../../src/backends/context.js';
import { VfsBackend } from '../../src/backends/vfs/vfs-backend.js';
import { parseVfsOptions } from '../../src/backends/vfs/vfs-options.js';
import { DockerEngine } from '../../src/drivers/docker-engine/docker-engine.js';
import { SOCKET_MODULES } from '../../src/drivers/socket-module.js';
import { SHELL_TOKENS } from '../../src/drivers/tokens.js';
import { memContainer, memFs } from '../helpers/memfs-stack.js';
import { RecordingBackend } from '../helpers/recording-backend.js';

/** A backend of a name stowage does not ship: vfs under another name, recording what it was made from. */
class MemoryBackend extends RecordingBackend {
  override get name() { return 'memory'; }
}

function memoryModule(made: Array<{ ctx: BackendContext; options: Record<string, string> }>): ContainerModule {
  return backendModule('memory', (ctx, options) => {
    made.push({ ctx, options });
    return new MemoryBackend(new VfsBackend(ctx, parseVfsOptions({ 'vfs.path': options['memory.path'] ?? '/data' }, ctx.root)));
  });
}

/** An engine the test controls: which containers use which volume, and whether it was stopped. */
class FakeEngine implements ContainerReferences {
  readonly configured = true;
  stopped = false;
  scanResult: ContainerScan = { reachable: true, byVolume: {} };
  async scan(): Promise<ContainerScan> { return this.scanResult; }
  onEvent(): void {}
  stop(): void { this.stopped = true; }
}

describe('the container', () => {
  it('lists the shipped backends as their modules register them', () => {
    expect(backendNames()).toEqual(['vfs', 'glusterfs', 'devicemapper']);
  });

  it('builds a backend registered by one extra module, by its name, from its options and the node\'s context', async () => {
    const fs = memFs();
    const made: Array<{ ctx: BackendContext; options: Record<string, string> }> = [];
    const container = memContainer({ fs, nodeId: 'node-m', backend: 'memory', backendOptions: { 'memory.path': '/mem' } },
      memoryModule(made));
    const manager = container.get<VolumeManager>(TOKENS.VolumeManager);
    await manager.init();
    await manager.create('inside');
    expect(manager.backendName).toBe('memory');
    expect(made).toHaveLength(1);
    expect(made[0]!.options).toEqual({ 'memory.path': '/mem' });
    expect(made[0]!.ctx).toMatchObject({ nodeId: 'node-m', root: '/state', fs });
    expect(await fs.readdir('/mem')).toContain('inside');
    await manager.dispose();
  });

  it('refuses an unknown backend name, naming every registered one, before anything is written', async () => {
    const fs = memFs();
    const container = memContainer({ fs, backend: 'nfs' }, memoryModule([]));
    expect(() => container.get(TOKENS.VolumeManager)).toThrow(expect.objectContaining({
      code: ErrorCodes.INVALID_OPTION,
      message: 'unknown backend "nfs"; available backends: vfs, glusterfs, devicemapper, memory',
    }));
    await expect(fs.readdir('/state')).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('refuses a name two modules register rather than pick one', () => {
    const container = memContainer({ fs: memFs(), backend: 'memory' }, memoryModule([]), memoryModule([]));
    expect(() => container.get(TOKENS.Backend)).toThrow(/backend "memory" is registered 2 times/);
  });

  it('uses an embedder\'s Backend instance as it is', () => {
    const fs = memFs();
    const own = new RecordingBackend(new VfsBackend({ nodeId: 'e', root: '/own', fs, runner: new ExecaCommandRunner(), log: silentLogger },
      { path: '/own/data', shared: false }));
    expect(memContainer({ fs, backend: own }).get<Backend>(TOKENS.Backend)).toBe(own);
  });

  it('binds the Docker engine adapter as the core\'s ContainerReferences: one instance, one event stream', () => {
    const container = buildContainer({
      backend: 'vfs', backendOptions: {}, root: '/nonexistent', nodeId: 'n', onRemove: 'delete', logger: silentLogger,
      engine: { socket: '/run/test-docker.sock', driverName: 'mydriver' },
    }, ...SOCKET_MODULES);
    const engine = container.get<DockerEngine>(SHELL_TOKENS.DockerEngine);
    expect(engine).toBeInstanceOf(DockerEngine);
    expect(engine.socket).toBe('/run/test-docker.sock');
    expect(container.get(TOKENS.ContainerReferences)).toBe(engine);
  });

  it('gives the core an engine rebound by a test module: release asks it, dispose stops it', async () => {
    const engine = new FakeEngine();
    const container = memContainer({ fs: memFs() }, new ContainerModule(({ rebind }) => {
      rebind(TOKENS.ContainerReferences).toConstantValue(engine);
    }));
    const manager = container.get<VolumeManager>(TOKENS.VolumeManager);
    await manager.init();
    await manager.create('db');
    await manager.mount('db', 'm1');
    engine.scanResult = { reachable: true, byVolume: { db: [{ id: 'c0ffee', name: 'web', state: 'running' }] } };
    await expect(manager.release('db', {})).rejects.toMatchObject({
      code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/used by container web \(c0ffee, running\)/),
    });
    expect((await manager.get('db')).mountCount).toBe(1);
    engine.scanResult = { reachable: true, byVolume: { db: [{ id: 'c0ffee', name: 'web', state: 'exited' }] } };
    expect((await manager.release('db', {})).map((r) => r.id)).toEqual(['m1']);
    await manager.dispose();
    expect(engine.stopped).toBe(true);
  });
});
