import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCodes, createStowage, isStowageError, type Stowage } from '../../src/index.js';
import { VfsBackend } from '../../src/backends/vfs/vfs-backend.js';
import { ExecaCommandRunner } from '../../src/core/command-runner.js';
import { silentLogger } from '../../src/core/logger.js';
import { memFs } from '../helpers/memfs-stack.js';

describe('createStowage (the embedding API)', () => {
  const dirs: string[] = [];
  const open: Stowage[] = [];
  afterEach(async () => {
    await Promise.all(open.splice(0).map((s) => s.close()));
    await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
  });

  async function tempDir(): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'stowage-api-'));
    dirs.push(dir);
    return dir;
  }

  it('runs the README example end to end on a real directory', async () => {
    const dir = await tempDir();
    const stowage = await createStowage({
      backend: 'vfs', options: { 'vfs.path': join(dir, 'volumes') }, root: join(dir, 'state'), nodeId: 'worker-1', onRemove: 'delete',
    });
    open.push(stowage);
    const { volume, created } = await stowage.create('cache', { size: '2G', mode: '750' });
    expect(created).toBe(true);
    expect(volume.status.size).toBe('2GiB');
    const path = await stowage.mount('cache', 'job-42');
    expect(path).toBe(join(dir, 'volumes', 'cache'));
    await writeFile(join(path, 'result'), '42');
    expect((await stowage.inspect('cache')).mountCount).toBe(1);
    await stowage.unmount('cache', 'job-42');
    expect((await stowage.list()).map((v) => [v.name, v.createdBy])).toEqual([['cache', 'worker-1']]);
    expect(await readFile(join(path, 'result'), 'utf8')).toBe('42');
    await stowage.remove('cache');
    expect(await stowage.list()).toEqual([]);
    expect(await stowage.info()).toMatchObject({ node: 'worker-1', backend: 'vfs', scope: 'local' });
  });

  it('remove with retain keeps the data aside for that call, whatever onRemove says', async () => {
    const dir = await tempDir();
    const stowage = await createStowage({ options: { 'vfs.path': join(dir, 'volumes') }, root: join(dir, 'state'), onRemove: 'delete' });
    open.push(stowage);
    await stowage.create('kept');
    await writeFile(join(await stowage.mount('kept', 'm1'), 'result'), '42');
    await stowage.unmount('kept', 'm1');
    const { retainedAt } = await stowage.remove('kept', { retain: true });
    expect(await readFile(join(retainedAt!, 'result'), 'utf8')).toBe('42');
    expect(await stowage.list()).toEqual([]);
  });

  it('throws StowageErrors with stable codes', async () => {
    const dir = await tempDir();
    const stowage = await createStowage({ root: dir });
    open.push(stowage);
    const err = await stowage.inspect('missing').catch((e: unknown) => e);
    expect(isStowageError(err, ErrorCodes.VOLUME_NOT_FOUND)).toBe(true);
    await expect(stowage.create('bad/name')).rejects.toMatchObject({ code: 'E_INVALID_NAME' });
    await expect(stowage.create('ok', { size: 'huge' })).rejects.toMatchObject({ code: 'E_INVALID_OPTION' });
    expect(await readdir(join(dir, 'volumes'))).toEqual(['.stowage']);
  });

  it('accepts a Backend instance of the embedder\'s own', async () => {
    const fs = memFs();
    const backend = new VfsBackend({ nodeId: 'emb', root: '/own', fs, runner: new ExecaCommandRunner(), log: silentLogger },
      { path: '/own/data', shared: false });
    const stowage = await createStowage({ backend, root: '/own', nodeId: 'emb', fs });
    open.push(stowage);
    await stowage.create('inside-memfs');
    expect(await fs.readdir('/own/data')).toContain('inside-memfs');
  });
});
