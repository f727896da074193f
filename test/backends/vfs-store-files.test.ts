import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as realFs from 'node:fs/promises';
import { chmod, mkdir, mkdtemp, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createFileExclusive, writeFileAtomic } from '../../src/core/atomic-file.js';
import { ExecaCommandRunner } from '../../src/core/command-runner.js';
import type { FsPort } from '../../src/core/fs-port.js';
import { VfsBackend } from '../../src/backends/vfs/vfs-backend.js';
import { parseVfsOptions } from '../../src/backends/vfs/vfs-options.js';
import { memoryLogger, type MemoryLogger } from '../helpers/memory-logger.js';
import { memFs } from '../helpers/memfs-stack.js';
import { createRequest } from '../../src/core/create-request.js';

const request = (name: string, options = {}) => createRequest(name, options, { createdAt: '2026-01-01T00:00:00.000Z', createdBy: 'node-a' });

function vfs(fs: FsPort, root: string, store: string, nodeId = 'node-a', log: MemoryLogger = memoryLogger()): VfsBackend {
  return new VfsBackend({ nodeId, root, fs, runner: new ExecaCommandRunner(), log }, parseVfsOptions({ 'vfs.path': store }, root));
}

/** An fs whose file writes fail as on a full disk. */
function fullDisk(fs: FsPort): FsPort {
  return {
    ...fs,
    open: (async (...args: Parameters<FsPort['open']>) => {
      const handle = await fs.open(...args);
      return new Proxy(handle, {
        get(target, prop) {
          if (prop === 'writeFile') return () => Promise.reject(Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' }));
          const value = Reflect.get(target, prop) as unknown;
          return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
        },
      });
    }) as FsPort['open'],
  };
}

describe('vfs store files', () => {
  const dirs: string[] = [];
  afterEach(async () => {
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  });
  async function tempBase(): Promise<string> {
    const base = await mkdtemp(join(tmpdir(), 'stowage-files-'));
    dirs.push(base);
    return base;
  }

  it('lists a volume whose valid name contains ".tmp-", and no temp file as a volume', async () => {
    const fs = memFs();
    const backend = vfs(fs, '/state', '/store');
    await backend.init();
    await backend.create(request('app.tmp-data'));
    await fs.writeFile('/store/.stowage/volumes/.tmp-0000abcd-1-0000abcd-ghost.json', '{}');
    expect((await backend.list()).map((v) => v.name)).toEqual(['app.tmp-data']);
    expect((await backend.get('app.tmp-data'))?.name).toBe('app.tmp-data');
  });

  it('a failed write (full disk) leaves no temp file behind', async () => {
    const fs = memFs();
    await fs.mkdir('/d');
    await expect(createFileExclusive(fullDisk(fs), '/d/entry.json', 'x')).rejects.toMatchObject({ code: 'ENOSPC' });
    await expect(writeFileAtomic(fullDisk(fs), '/d/state.json', 'x')).rejects.toMatchObject({ code: 'ENOSPC' });
    expect(await fs.readdir('/d')).toEqual([]);
    const backend = vfs(fs, '/state', '/store');
    await backend.init();
    const failing = vfs(fullDisk(fs), '/state', '/store');
    await failing.init().catch(() => undefined);
    await expect(failing.create(request('vol'))).rejects.toMatchObject({ code: 'ENOSPC' });
    expect(await fs.readdir('/store/.stowage/volumes')).toEqual([]);
    expect(await fs.readdir('/store/.stowage/journal')).toEqual([]);
    expect((await fs.readdir('/store')).filter((n) => !n.startsWith('.'))).toEqual([]);
  });

  it('removes temps of dead processes of this node at start, other nodes\' only when old', async () => {
    const base = await tempBase();
    const root = join(base, 'root');
    const store = join(base, 'store');
    const first = vfs(realFs, root, store);
    await first.init();
    await first.dispose();
    const tag = (id: string) => createHash('sha256').update(id).digest('hex').slice(0, 8);
    const deadPid = spawnSync('true').pid!;
    const volumes = join(store, '.stowage', 'volumes');
    const mineDead = `.tmp-${tag('node-a')}-${deadPid}-0badf00d-v1.json`;
    const othersFresh = `.tmp-${tag('node-b')}-${deadPid}-0badf00d-v2.json`;
    const othersOld = `.tmp-${tag('node-b')}-${deadPid}-0badf00e-v3.json`;
    const legacyOld = 'v4.json.tmp-123-abcdef01';
    for (const name of [mineDead, othersFresh, othersOld, legacyOld]) await writeFile(join(volumes, name), '');
    const hoursAgo = new Date(Date.now() - 2 * 3600_000);
    await utimes(join(volumes, othersOld), hoursAgo, hoursAgo);
    await utimes(join(volumes, legacyOld), hoursAgo, hoursAgo);
    await writeFile(join(root, `.tmp-${tag('node-a')}-${deadPid}-0badf00d-mounts.json`), '');
    const log = memoryLogger();
    const restarted = vfs(realFs, root, store, 'node-a', log);
    await restarted.init();
    expect(await readdir(volumes)).toEqual([othersFresh]);
    expect((await readdir(root)).filter((n) => n.startsWith('.tmp-'))).toEqual([]);
    expect(log.lines.join('\n')).toMatch(/removed 3 leftover temp file\(s\) in .*volumes/);
  });

  it('List shows a volume another node removed and re-created with other options', async () => {
    const fs = memFs();
    await fs.mkdir('/shared');
    const a = vfs(fs, '/state-a', '/shared', 'node-a');
    const b = vfs(fs, '/state-b', '/shared', 'node-b');
    await a.init();
    await b.init();
    await a.create({ ...request('app', { size: 1024 }) });
    expect((await b.list()).map((v) => v.options.size)).toEqual([1024]);
    await a.remove('app', { retain: false });
    await a.create(createRequest('app', { size: 4096 }, { createdAt: '2026-05-05T00:00:00.000Z', createdBy: 'node-a' }));
    const listed = await b.list();
    expect(listed.map((v) => [v.options.size, v.createdAt])).toEqual([[4096, '2026-05-05T00:00:00.000Z']]);
  });

  it('keeps the store, .stowage and --root private: another local user can neither list names nor read data', async () => {
    if (process.getuid?.() !== 0) return; // needs root to switch users; CI runs as root
    const base = await tempBase();
    await chmod(base, 0o755); // only stowage's own modes stand between the user and the data
    const root = join(base, 'root');
    const store = join(base, 'store');
    const backend = vfs(realFs, root, store);
    await backend.init();
    await backend.create(request('secret'));
    await writeFile(join(store, 'secret', 'data'), 'confidential');
    await backend.create(request('old'));
    await writeFile(join(store, 'old', 'data'), 'retained');
    const { retainedAt } = await backend.remove('old', { retain: true });
    for (const dir of [store, join(store, '.stowage'), join(store, '.stowage', 'removed'), join(store, '.stowage', 'volumes'), root]) {
      expect((await stat(dir)).mode & 0o777, dir).toBe(0o700);
    }
    const asNobody = (...argv: string[]) =>
      spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', ...argv], { encoding: 'utf8' });
    expect(asNobody('ls', base).status).toBe(0); // the test itself works
    for (const attempt of [['ls', store], ['cat', join(store, 'secret', 'data')], ['ls', join(store, '.stowage', 'volumes')],
      ['cat', join(retainedAt!, 'data')], ['ls', root]]) {
      const run = asNobody(...attempt);
      expect(run.status, attempt.join(' ')).not.toBe(0);
      expect(run.stderr, attempt.join(' ')).toMatch(/Permission denied/);
    }
  });

  it('warns about an existing vfs.path other users can read, naming the fix', async () => {
    const base = await tempBase();
    const store = join(base, 'store');
    await mkdir(store, { mode: 0o755 });
    await chmod(store, 0o755);
    const log = memoryLogger();
    await vfs(realFs, join(base, 'root'), store, 'node-a', log).init();
    expect(log.lines.join('\n')).toMatch(new RegExp(`vfs.path ${store} has mode 755: .* run "chmod 700 ${store}"`));
  });
});

describe('vfs create of a registered name', () => {
  it('is E_VOLUME_EXISTS even when the volume holds data, and changes nothing', async () => {
    const fs = memFs();
    const backend = vfs(fs, '/state', '/store');
    await backend.init();
    await backend.create(request('full', { mode: 0o750 }));
    await fs.writeFile('/store/full/data', 'kept');
    await expect(backend.create(request('full', { mode: 0o700 }))).rejects.toMatchObject({ code: 'E_VOLUME_EXISTS' });
    expect((await fs.stat('/store/full')).mode & 0o777).toBe(0o750);
    expect(await fs.readFile('/store/full/data', 'utf8')).toBe('kept');
    expect(await fs.readdir('/store/.stowage/journal')).toEqual([]);
  });
});
