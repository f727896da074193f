import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ContainerModule } from 'inversify';
import { afterEach, describe, expect, it } from 'vitest';
import { buildContainer } from '../../../src/container.js';
import type { Backend } from '../../../src/core/backend.js';
import { restoreTree } from '../../../src/core/backup/index.js';
import type { ContainerReferences, ContainerScan } from '../../../src/core/container-references.js';
import { ErrorCodes } from '../../../src/core/errors.js';
import { silentLogger } from '../../../src/core/logger.js';
import { TOKENS } from '../../../src/core/tokens.js';
import type { VolumeManager } from '../../../src/core/volume-manager.js';

/**
 * An engine the test controls. Pausing and unpausing write marker files into the volume, so
 * the snapshot's content shows whether it was taken between the two.
 */
class PausingEngine implements ContainerReferences {
  readonly configured = true;
  readonly calls: string[] = [];
  byVolume: ContainerScan['byVolume'] = {};
  constructor(private readonly volumePath: () => string) {}
  async scan(): Promise<ContainerScan> { return { reachable: true, byVolume: this.byVolume }; }
  async pause(id: string): Promise<void> {
    this.calls.push(`pause ${id}`);
    await writeFile(join(this.volumePath(), `paused-${id}`), '');
  }
  async unpause(id: string): Promise<void> {
    this.calls.push(`unpause ${id}`);
    await writeFile(join(this.volumePath(), `unpaused-${id}`), '');
  }
  onEvent(): void {}
  stop(): void {}
}

const dirs: string[] = [];
const managers: VolumeManager[] = [];
afterEach(async () => {
  await Promise.all(managers.splice(0).map((m) => m.dispose()));
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function node(dir: string, nodeId: string, engine?: ContainerReferences): Promise<{ manager: VolumeManager; backend: Backend }> {
  await mkdir(join(dir, 'store'), { recursive: true });
  const container = buildContainer({
    backend: 'vfs', backendOptions: { 'vfs.path': join(dir, 'store'), 'vfs.shared': 'true' }, root: join(dir, nodeId), nodeId,
    onRemove: 'delete', logger: silentLogger, engine: { socket: undefined }, cluster: { heartbeatMs: 60_000 },
  }, ...(engine ? [new ContainerModule(({ rebind }) => { rebind(TOKENS.ContainerReferences).toConstantValue(engine); })] : []));
  const manager = container.get<VolumeManager>(TOKENS.VolumeManager);
  await manager.init();
  managers.push(manager);
  return { manager, backend: container.get<Backend>(TOKENS.Backend) };
}

/** The names in a snapshot, restored to a temporary directory. */
async function namesIn(backend: Backend, volume: string, snapshot: string): Promise<string[]> {
  const source = await backend.snapshots!.openSnapshot!(volume, snapshot);
  if (source.kind !== 'backup') throw new Error('vfs snapshots are backups');
  const target = await mkdtemp(join(tmpdir(), 'stowage-consistent-'));
  dirs.push(target);
  await restoreTree(source.repository, source.volume, source.backupId, target);
  await source.release();
  return (await readdir(target)).sort();
}

describe('consistent snapshots', () => {
  it('pause the running local containers that use the volume for the snapshot, then unpause them', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'stowage-consistent-'));
    dirs.push(dir);
    const engine = new PausingEngine(() => join(dir, 'store', 'db'));
    const { manager, backend } = await node(dir, 'node-a', engine);
    await manager.create('db');
    await manager.mount('db', 'c1-mount');
    engine.byVolume = { db: [{ id: 'c1', name: 'pg', state: 'running' }, { id: 'c2', name: 'idle', state: 'exited' }] };
    await manager.createSnapshot('db', 'quiet', { consistent: true });
    // Only the running container was paused, and the snapshot was taken while it was.
    expect(engine.calls).toEqual(['pause c1', 'unpause c1']);
    expect(await namesIn(backend, 'db', 'quiet')).toEqual(['paused-c1']);
    // Without `consistent` nothing is paused.
    await manager.createSnapshot('db', 'plain');
    expect(engine.calls).toHaveLength(2);
  });

  it('is refused while another node uses the volume, unless forced', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'stowage-consistent-'));
    dirs.push(dir);
    const engine = new PausingEngine(() => join(dir, 'store', 'shared'));
    const a = await node(dir, 'node-a', engine);
    const b = await node(dir, 'node-b');
    await a.manager.create('shared');
    await b.manager.mount('shared', 'elsewhere');
    await expect(a.manager.createSnapshot('shared', 'refused', { consistent: true })).rejects.toMatchObject({
      code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/also used on node-b: .*Stop those containers first, or force/),
    });
    expect(await a.manager.listSnapshots('shared')).toEqual([]);
    await a.manager.createSnapshot('shared', 'forced', { consistent: true, force: true });
    expect((await a.manager.listSnapshots('shared')).map((s) => s.name)).toEqual(['forced']);
    await b.manager.unmount('shared', 'elsewhere');
  });

  it('is refused while this node mounts the volume and no engine can pause its containers', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'stowage-consistent-'));
    dirs.push(dir);
    const { manager } = await node(dir, 'node-a');
    await manager.create('lonely');
    await manager.createSnapshot('lonely', 'unmounted', { consistent: true });
    await manager.mount('lonely', 'm');
    await expect(manager.createSnapshot('lonely', 'mounted', { consistent: true })).rejects.toMatchObject({
      code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/no container engine is configured/),
    });
    expect((await manager.listSnapshots('lonely')).map((s) => s.name)).toEqual(['unmounted']);
  });
});
