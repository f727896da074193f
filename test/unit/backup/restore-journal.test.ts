/**
 * Interrupted restores (src/core/backup/restore-journal.ts) on the real vfs stack: a restore
 * marks its new volume while it runs, a start that finds a marker removes that volume, and a
 * volume without a marker is never touched.
 */
import { existsSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ContainerModule } from 'inversify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BackupService } from '../../../src/core/backup/service-contract.js';
import { RestoreJournal, RESTORE_MOUNT_PREFIX } from '../../../src/core/backup/restore-journal.js';
import { asFsPort, LocalFirstFs } from '../../../src/core/local-fs.js';
import { TOKENS } from '../../../src/core/tokens.js';
import { makeTempDir, removeTempDir } from '../../helpers/daemon-process.js';
import { memoryLogger } from '../../helpers/memory-logger.js';
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
    const path = await manager.mount('half', `${RESTORE_MOUNT_PREFIX}0123abcd`);
    await mkdir(join(path, 'part'));
    await new RestoreJournal(asFsPort(new LocalFirstFs()), join(dir, 'root')).begin('half', 'vfs:///somewhere?volume=v&backup=b');
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
