/**
 * Interrupted restores (src/core/backup/restore-journal.ts) on the real vfs stack: a restore
 * marks its new volume while it runs, a start that finds a marker removes that volume (that
 * incarnation only), a volume without a marker is never touched, and a failed restore whose
 * clean-up failed too leaves a volume that cannot be mounted until it is removed.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ContainerModule } from 'inversify';
import type { Backend } from '../../../src/core/backend.js';
import { ErrorCodes } from '../../../src/core/errors.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BackupService } from '../../../src/core/backup/service-contract.js';
import { RestoreJournal } from '../../../src/core/backup/restore-journal.js';
import { RESTORE_MOUNT_PREFIX } from '../../../src/core/mount-kinds.js';
import { asFsPort, LocalFirstFs } from '../../../src/core/local-fs.js';
import { incarnationOf, type MountTable } from '../../../src/core/mount-table.js';
import { TOKENS } from '../../../src/core/tokens.js';
import { makeTempDir, removeTempDir } from '../../helpers/daemon-process.js';
import { memoryLogger } from '../../helpers/memory-logger.js';
import { pluginCall } from '../../helpers/plugin-client.js';
import { startPluginServer, type PluginServer } from '../../helpers/plugin-server.js';

describe('interrupted restores', () => {
  let dir: string;
  let server: PluginServer | undefined;

  beforeAll(async () => { dir = await makeTempDir('stowage-journal-'); });
  afterAll(async () => {
    await server?.close();
    await removeTempDir(dir);
  });

  it('a restore leaves no marker behind, whether it succeeds or fails', async () => {
    server = await startPluginServer(dir);
    const { manager } = server;
    await manager.create('source', {});
    const path = await manager.mount('source', 'writer');
    await writeFile(join(path, 'hello.txt'), 'hello');
    await manager.unmount('source', 'writer');
    const service = server.container.get<BackupService>(TOKENS.BackupService);
    const backup = await service.createBackup('source', { dest: `vfs://${dir}/repo` });
    await manager.create('copy', { backup: backup.url });
    expect(await readdir(join(dir, 'root', 'restoring'))).toEqual([]);
    await expect(manager.create('broken', { backup: backup.url.replace(/backup=[^&]+/, 'backup=0000000000000000') })).rejects.toThrow();
    await expect(manager.create('copy', { backup: backup.url })).rejects.toThrow(/already exists/);
    expect(await readdir(join(dir, 'root', 'restoring'))).toEqual([]);
    expect((await manager.list()).map((v) => v.name).sort()).toEqual(['copy', 'source']);
  });

  it('removes, at the next start, the volume of a restore the daemon did not finish, and only that one', async () => {
    const { manager } = server!;
    // What a daemon killed mid-restore leaves: the volume, part of its files, the restore's mount record, the marker.
    await manager.create('half', {});
    const path = await manager.mount('half', 'writer');
    await mkdir(join(path, 'part'));
    await manager.unmount('half', 'writer');
    // Only a restore makes a record under its prefix: it is planted as a killed restore left it.
    const incarnation = incarnationOf(await manager.get('half'));
    const mounts = server!.container.get<MountTable>(TOKENS.MountTable);
    mounts.increment('half', `${RESTORE_MOUNT_PREFIX}0123abcd`, new Date().toISOString(), incarnation);
    await mounts.persist();
    await new RestoreJournal(asFsPort(new LocalFirstFs()), join(dir, 'root'))
      .begin('half', 'vfs:///somewhere?volume=v&backup=b', incarnation);
    await server!.close();
    server = undefined;

    const log = memoryLogger();
    server = await startPluginServer(dir, {}, new ContainerModule(({ rebind }) => { rebind(TOKENS.Logger).toConstantValue(log); }));
    expect((await server.manager.list()).map((v) => v.name).sort()).toEqual(['copy', 'source']);
    expect(existsSync(join(dir, 'vols', 'half'))).toBe(false);
    expect(await readdir(join(dir, 'root', 'restoring'))).toEqual([]);
    expect(log.lines.join('\n')).toMatch(/removed volume half: its restore from vfs:\/\/\/somewhere\?volume=v&backup=b, started .*, was interrupted/);
  });
});

/**
 * The vfs backend with a remove that fails while `failures` is above zero, as on a disk that is
 * still full when a failed restore removes its volume again; everything else is the real backend.
 */
/** A backend whose next `failures` removes (and `createFailures` creates) fail as on a full disk. */
function failingRemoves(): { module: ContainerModule; failures: number; createFailures: number } {
  const faults = {
    failures: 0,
    createFailures: 0,
    module: new ContainerModule(({ onActivation }) => {
      onActivation<Backend>(TOKENS.Backend, (_ctx, inner) => new Proxy(inner, {
        get(target, prop) {
          if (prop === 'remove' && faults.failures > 0) {
            return async () => {
              faults.failures -= 1;
              throw Object.assign(new Error('ENOSPC: no space left on device, rename'), { code: 'ENOSPC' });
            };
          }
          if (prop === 'create' && faults.createFailures > 0) {
            return async () => {
              faults.createFailures -= 1;
              throw Object.assign(new Error('ENOSPC: no space left on device, mkdir'), { code: 'ENOSPC' });
            };
          }
          const value: unknown = Reflect.get(target, prop, target);
          return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
        },
      }));
    }),
  };
  return faults;
}

describe('a failed restore whose clean-up failed too', () => {
  const dirs: string[] = [];
  const servers: PluginServer[] = [];
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.close().catch(() => undefined)));
    await Promise.all(dirs.map((d) => removeTempDir(d)));
  });

  /** A core on `dir` (state in `dir/root`, volumes in `dir/vols`) with a log to read and removes that can fail. */
  async function start(dir: string, faults = failingRemoves()) {
    const log = memoryLogger();
    const server = await startPluginServer(dir, {}, faults.module,
      new ContainerModule(({ rebind }) => { rebind(TOKENS.Logger).toConstantValue(log); }));
    servers.push(server);
    return { server, manager: server.manager, log, faults };
  }

  async function stop(server: PluginServer): Promise<void> {
    servers.splice(servers.indexOf(server), 1);
    await server.close();
  }

  /**
   * A fresh directory with a backup of a volume, and volume `name` left by a restore of it that
   * failed part way (it stopped after its first bytes, as on a full disk) and whose removal failed.
   */
  async function halfRestored(name: string) {
    const dir = await makeTempDir('stowage-journal-');
    dirs.push(dir);
    const core = await start(dir);
    const { manager } = core;
    await manager.create('source', {});
    const path = await manager.mount('source', 'writer');
    await writeFile(join(path, 'a-big.bin'), randomBytes(4 * 1024 * 1024));
    for (const n of ['b', 'c', 'd']) await writeFile(join(path, `${n}.txt`), n);
    await manager.unmount('source', 'writer');
    const backup = await core.server.container.get<BackupService>(TOKENS.BackupService).createBackup('source', { dest: `vfs://${dir}/repo` });
    const full = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    const stop = new AbortController();
    core.faults.failures = 1;
    await expect(manager.create(name, { backup: backup.url }, {
      signal: stop.signal, onProgress: (p) => { if (p.bytes > 0) stop.abort(full); },
    })).rejects.toThrow(/^restoring volume \w+ from .* failed: .*no space left on device.*; removing the half-restored volume failed too/);
    expect(core.faults.failures).toBe(0);
    expect((await manager.list()).map((v) => v.name).sort()).toEqual([name, 'source']);
    return { dir, ...core, backup };
  }

  const markers = (dir: string) => readdir(join(dir, 'root', 'restoring'));

  it('keeps a volume of that name made after the half-restored one was removed, with its data, across a restart', async () => {
    const { dir, server, manager } = await halfRestored('db');
    // What the error says to do, then the name used again for data that matters.
    await manager.remove('db');
    await manager.create('db', {});
    const path = await manager.mount('db', 'app');
    await writeFile(join(path, 'important.txt'), 'keep me');
    await manager.unmount('db', 'app');
    await stop(server);

    const again = await start(dir);
    expect((await again.manager.list()).map((v) => v.name).sort()).toEqual(['db', 'source']);
    const mounted = await again.manager.mount('db', 'app');
    expect(await readFile(join(mounted, 'important.txt'), 'utf8')).toBe('keep me');
    await again.manager.unmount('db', 'app');
    expect(again.log.lines.join('\n')).not.toMatch(/removed volume db/);
  });

  it('refuses to mount the half-restored volume, says so in its status, and its remove clears the marker', async () => {
    const { dir, server, manager } = await halfRestored('db');
    expect(await markers(dir)).toEqual(['db.json']);
    const marker = JSON.parse(await readFile(join(dir, 'root', 'restoring', 'db.json'), 'utf8')) as { incarnation?: string };
    expect(marker.incarnation).toBe(incarnationOf(await manager.get('db')));
    await expect(manager.mount('db', 'container-1')).rejects.toMatchObject({
      code: ErrorCodes.VOLUME_DATA_MISSING,
      message: expect.stringMatching(/^volume db holds partial data: its restore from vfs:.* failed, and so did removing the volume afterwards; it cannot be mounted$/),
      remedies: [{ action: 'remove-volume', volume: 'db' }],
    });
    // Docker's Mount and Get (what `docker volume inspect` shows) say the same.
    const mount = await pluginCall(server.socket, 'Mount', { Name: 'db', ID: 'container-2' });
    expect(mount.Err).toMatch(/volume db holds partial data: .*; remove it with "docker volume rm db"$/);
    const got = await pluginCall(server.socket, 'Get', { Name: 'db' });
    expect(got).toMatchObject({ Volume: { Status: { restore: expect.stringMatching(/^failed: /) } } });
    expect(manager.mountRecords()).toEqual([]);
    expect((await manager.get('db')).status.restore).toMatch(/^failed: .*partial data/);
    expect((await manager.get('source')).status.restore).toBeUndefined();

    await manager.remove('db');
    expect(await markers(dir)).toEqual([]);
    // The name is free for a new volume, which mounts as any other.
    await manager.create('db', {});
    expect(await manager.mount('db', 'container-1')).toBe(join(dir, 'vols', 'db'));
    expect((await manager.get('db')).status.restore).toBeUndefined();
    await manager.unmount('db', 'container-1');
  });

  it('marks a restore before its volume exists, and clears the marks when the create fails', async () => {
    const { dir, server, manager, faults, backup } = await halfRestored('first');
    await manager.remove('first');
    // While the volume is made, its marker is already there, naming the incarnation it gets.
    const seen: string[][] = [];
    const backend = server.container.get<Backend>(TOKENS.Backend);
    const create = backend.create.bind(backend);
    backend.create = async (request) => {
      seen.push(await markers(dir));
      return create(request);
    };
    await manager.create('copy', { backup: backup.url });
    expect(seen).toEqual([['copy.json']]);
    expect(await markers(dir)).toEqual([]);
    faults.createFailures = 1;
    await expect(manager.create('other', { backup: backup.url })).rejects.toThrow(/creating volume other failed: .*no space left on device/);
    expect(faults.createFailures).toBe(0);
    expect(await markers(dir)).toEqual([]);
    expect((await manager.list()).map((v) => v.name).sort()).toEqual(['copy', 'source']);
  });

  it('a start removes the half-restored volume (the same incarnation), and keeps refusing its mounts while that fails', async () => {
    const { dir, server } = await halfRestored('db');
    await stop(server);

    // The disk is still full at the next start: the volume stays, and stays unmountable.
    const full = failingRemoves();
    full.failures = 1;
    const second = await start(dir, full);
    expect(full.failures).toBe(0);
    expect(second.log.lines.join('\n')).toMatch(/error volume db may be left half-restored: .*no space left on device/);
    expect(await markers(dir)).toEqual(['db.json']);
    await expect(second.manager.mount('db', 'container-1')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_DATA_MISSING });
    await stop(second.server);

    const third = await start(dir);
    expect((await third.manager.list()).map((v) => v.name)).toEqual(['source']);
    expect(existsSync(join(dir, 'vols', 'db'))).toBe(false);
    expect(await markers(dir)).toEqual([]);
    expect(third.log.lines.join('\n')).toMatch(/warn removed volume db: its restore from vfs:.* was interrupted or failed/);
  });

  it('leaves a volume of another incarnation, and any volume a marker without one names, and drops those markers', async () => {
    const dir = await makeTempDir('stowage-journal-');
    dirs.push(dir);
    const first = await start(dir);
    for (const name of ['later', 'legacy']) {
      await first.manager.create(name, {});
      const path = await first.manager.mount(name, 'app');
      await writeFile(join(path, 'data.txt'), name);
      await first.manager.unmount(name, 'app');
    }
    const root = join(dir, 'root');
    // A marker of an earlier volume named `later`, and one of an earlier version, which names none.
    await new RestoreJournal(asFsPort(new LocalFirstFs()), root).begin('later', 'vfs:///old?volume=v&backup=b', '2020-01-01T00:00:00.000Z/node-a');
    await writeFile(join(root, 'restoring', 'legacy.json'),
      JSON.stringify({ volume: 'legacy', url: 'vfs:///old?volume=v&backup=b', startedAt: '2099-01-01T00:00:00.000Z' }));
    await stop(first.server);

    const second = await start(dir);
    expect((await second.manager.list()).map((v) => v.name).sort()).toEqual(['later', 'legacy']);
    for (const name of ['later', 'legacy']) {
      const path = await second.manager.mount(name, 'app');
      expect(await readFile(join(path, 'data.txt'), 'utf8')).toBe(name);
      await second.manager.unmount(name, 'app');
    }
    expect(await markers(dir)).toEqual([]);
    const log = second.log.lines.join('\n');
    expect(log).not.toMatch(/removed volume/);
    expect(log).toMatch(/info restore journal: dropped the marker of later .*the volume later now there was made later/);
    expect(log).toMatch(/error volume legacy may hold partial data: .*left as it is/);
  });

  it('keeps its markers in a directory only root can enter, and tightens one an earlier version made', async () => {
    const { dir, server } = await halfRestored('db');
    expect((await stat(join(dir, 'root', 'restoring'))).mode & 0o777).toBe(0o700);
    await stop(server);
    await chmod(join(dir, 'root', 'restoring'), 0o755);
    await start(dir);
    expect((await stat(join(dir, 'root', 'restoring'))).mode & 0o777).toBe(0o700);
  });
});
