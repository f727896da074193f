import { describe, expect, it } from 'vitest';
import { ExecaCommandRunner } from '../../src/core/command-runner.js';
import type { FsPort } from '../../src/core/fs-port.js';
import { memoryLogger } from '../helpers/memory-logger.js';
import { memFs } from '../helpers/memfs-stack.js';
import { VfsBackend } from '../../src/backends/vfs/vfs-backend.js';
import { parseVfsOptions } from '../../src/backends/vfs/vfs-options.js';
import { createRequest } from '../../src/core/create-request.js';

const READS = new Set(['readFile', 'readdir', 'stat', 'lstat', 'access']);

/**
 * The filesystem as a process sees it when it is killed after `budget` changing calls: that
 * call and every later one fail, so nothing after the "kill" reaches storage (not even the
 * in-process rollback). Opens count as changes: a write starts with one.
 */
function dyingFs(fs: FsPort, budget: number): { fs: FsPort; died: () => boolean } {
  let left = budget;
  let dead = false;
  const wrapped = new Proxy(fs, {
    get(target, prop: string) {
      const real = (target as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[prop]!;
      if (typeof real !== 'function') return real;
      return (...args: unknown[]) => {
        if (!READS.has(prop)) {
          if (left <= 0) dead = true;
          left -= 1;
        }
        if (dead) return Promise.reject(Object.assign(new Error(`killed before ${prop}`), { code: 'EIO' }));
        return real.apply(target, args);
      };
    },
  });
  return { fs: wrapped, died: () => dead };
}

function vfs(fs: FsPort, log = memoryLogger()): VfsBackend {
  return new VfsBackend({ nodeId: 'node-a', root: '/state', fs, runner: new ExecaCommandRunner(), log },
    parseVfsOptions({ 'vfs.path': '/store' }, '/state'));
}

const STORE = '/store';

/** The invariant after a restart: the registry and the data directories agree, and no intent is left. */
async function assertConsistent(fs: FsPort, backend: VfsBackend): Promise<void> {
  const registered = (await backend.list()).map((v) => v.name).sort();
  const dirs = (await fs.readdir(STORE)).filter((n) => !n.startsWith('.')).sort();
  expect(dirs).toEqual(registered);
  // Temps of this (still running) test process are not swept as a dead process's would be.
  expect((await fs.readdir(`${STORE}/.stowage/journal`)).filter((n) => !n.startsWith('.tmp-'))).toEqual([]);
}

describe('vfs create and remove killed at every step', () => {
  it('create: after a restart the volume exists complete (owner, mode) or not at all', async () => {
    let completed = false;
    for (let budget = 0; !completed && budget < 60; budget += 1) {
      const fs = memFs();
      await vfs(fs).init();
      const dying = dyingFs(fs, budget);
      const crashing = vfs(dying.fs);
      await crashing.init().catch(() => undefined);
      if (dying.died()) continue; // died during start-up: not the step under test
      const created = await crashing.create(createRequest('vol', { gid: 1000, mode: 0o750 }, { createdAt: '2026-01-01T00:00:00.000Z', createdBy: 'node-a' })).then(() => true, () => false);
      completed = created && !dying.died();
      const restarted = vfs(fs);
      await restarted.init();
      await assertConsistent(fs, restarted);
      if (await restarted.get('vol')) {
        const stat = await fs.stat(`${STORE}/vol`);
        expect(stat.mode & 0o7777, `budget ${budget}`).toBe(0o750);
        // memfs checks permissions as for a non-root user, so the owner stays ours here; the gid shows the chown.
        expect(stat.gid, `budget ${budget}`).toBe(1000);
      }
      // A create meeting whatever is left succeeds and yields a complete volume.
      await restarted.remove('vol', { retain: false });
      await restarted.create(createRequest('vol', { mode: 0o700 }, { createdAt: 'x', createdBy: 'node-a' }));
      expect((await fs.stat(`${STORE}/vol`)).mode & 0o7777).toBe(0o700);
      await restarted.settle();
    }
    expect(completed).toBe(true);
  });

  it('a create meeting the leftovers of a killed create rolls them back without a restart', async () => {
    const fs = memFs();
    const first = vfs(fs);
    await first.init();
    // What a kill between mkdir and the registry entry leaves: an intent and an empty directory.
    await fs.writeFile(`${STORE}/.stowage/journal/vol.json`,
      JSON.stringify({ format: 1, op: 'create', name: 'vol', nodeId: 'node-b', makesDir: true }));
    await fs.mkdir(`${STORE}/vol`, { mode: 0o700 });
    const record = await first.create(createRequest('vol', { gid: 1000 }, { createdAt: 'x', createdBy: 'node-a' }));
    expect(record.adopted).toBeUndefined();
    expect((await fs.stat(`${STORE}/vol`)).gid).toBe(1000);
    expect(await fs.readdir(`${STORE}/.stowage/journal`)).toEqual([]);
  });

  it('an intent left empty (its writer killed between creating and filling it) goes at the next create, or at a start once old', async () => {
    const fs = memFs();
    const first = vfs(fs);
    await first.init();
    const torn = `${STORE}/.stowage/journal/vol.json`;
    // Intent records are written in place: a kill right after the open leaves this.
    await fs.writeFile(torn, '');
    const young = vfs(fs);
    await young.init();
    // Without the name's lock, a torn intent this young may be another node's being written.
    expect(await fs.readdir(`${STORE}/.stowage/journal`)).toEqual(['vol.json']);
    const old = new Date(Date.now() - 60_000);
    await fs.utimes(torn, old, old);
    const later = vfs(fs);
    await later.init();
    expect(await fs.readdir(`${STORE}/.stowage/journal`)).toEqual([]);
    // Under the lock a create discards one at once, whatever its age.
    await fs.writeFile(torn, '{"format":1,"op":"cr');
    const record = await later.create(createRequest('vol', {}, { createdAt: 'x', createdBy: 'node-a' }));
    expect(record.name).toBe('vol');
    expect(await fs.readdir(`${STORE}/.stowage/journal`)).toEqual([]);
    expect(await later.get('vol')).toBeDefined();
  });

  it('remove: after a restart the volume is there with its data, or gone with its data retained', async () => {
    let completed = false;
    for (let budget = 0; !completed && budget < 60; budget += 1) {
      const fs = memFs();
      const setup = vfs(fs);
      await setup.init();
      await setup.create(createRequest('vol', {}, { createdAt: '2026-01-01T00:00:00.000Z', createdBy: 'node-a' }));
      await fs.writeFile(`${STORE}/vol/data`, 'precious');
      await setup.dispose();
      const dying = dyingFs(fs, budget);
      const crashing = vfs(dying.fs);
      await crashing.init().catch(() => undefined);
      if (dying.died()) continue;
      const removed = await crashing.remove('vol', { retain: true }).then(() => true, () => false);
      completed = removed && !dying.died();
      const restarted = vfs(fs);
      await restarted.init();
      await assertConsistent(fs, restarted);
      const retained = await fs.readdir(`${STORE}/.stowage/removed`);
      if (await restarted.get('vol')) {
        expect(await fs.readFile(`${STORE}/vol/data`, 'utf8'), `budget ${budget}`).toBe('precious');
        expect(retained).toEqual([]);
      } else {
        expect(retained, `budget ${budget}`).toHaveLength(1);
        expect(await fs.readFile(`${STORE}/.stowage/removed/${retained[0]}/data`, 'utf8')).toBe('precious');
      }
    }
    expect(completed).toBe(true);
  });

  it('a remove killed between moving the data and unregistering is finished at the next start', async () => {
    const fs = memFs();
    const first = vfs(fs);
    await first.init();
    await first.create(createRequest('vol', {}, { createdAt: '2026-01-01T00:00:00.000Z', createdBy: 'node-a' }));
    await fs.writeFile(`${STORE}/.stowage/journal/vol.json`, JSON.stringify({
      format: 1, op: 'remove', name: 'vol', nodeId: 'node-a', createdAt: '2026-01-01T00:00:00.000Z', createdBy: 'node-a',
      target: 'deleting/vol@20260101T000000Z-abcdef',
    }));
    await fs.rename(`${STORE}/vol`, `${STORE}/.stowage/deleting/vol@20260101T000000Z-abcdef`);
    const log = memoryLogger();
    const restarted = vfs(fs, log);
    await restarted.init();
    await restarted.settle();
    expect(await restarted.get('vol')).toBeUndefined();
    expect(await fs.readdir(`${STORE}/.stowage/deleting`)).toEqual([]);
    expect(log.lines.join('\n')).toMatch(/finishing the interrupted remove of volume vol/);
    await assertConsistent(fs, restarted);
  });

  it('recovery never unregisters a later volume of the same name', async () => {
    const fs = memFs();
    const first = vfs(fs);
    await first.init();
    await first.create(createRequest('vol', {}, { createdAt: '2026-03-03T00:00:00.000Z', createdBy: 'node-b' }));
    await fs.writeFile(`${STORE}/.stowage/journal/vol.json`, JSON.stringify({
      format: 1, op: 'remove', name: 'vol', nodeId: 'node-a', createdAt: '2026-01-01T00:00:00.000Z', createdBy: 'node-a',
      target: 'deleting/vol@20260101T000000Z-abcdef',
    }));
    const restarted = vfs(fs);
    await restarted.init();
    expect((await restarted.get('vol'))?.createdBy).toBe('node-b');
    await assertConsistent(fs, restarted);
  });
});

describe('vfs remove failing half-way in a running daemon', () => {
  it('puts the data back when the registry entry cannot be deleted', async () => {
    const fs = memFs();
    const backend = vfs(fs);
    await backend.init();
    await backend.create(createRequest('vol', {}, { createdAt: 'x', createdBy: 'node-a' }));
    await fs.writeFile(`${STORE}/vol/data`, 'precious');
    const failing: FsPort = {
      ...fs,
      unlink: ((path: string) => String(path).endsWith('/volumes/vol.json')
        ? Promise.reject(Object.assign(new Error('EIO: i/o error'), { code: 'EIO' }))
        : fs.unlink(path)) as FsPort['unlink'],
    };
    const crippled = vfs(failing);
    await crippled.init();
    await expect(crippled.remove('vol', { retain: false })).rejects.toMatchObject({ code: 'EIO' });
    expect((await crippled.list()).map((v) => v.name)).toEqual(['vol']);
    expect(await fs.readFile(`${STORE}/vol/data`, 'utf8')).toBe('precious');
    expect(await fs.readdir(`${STORE}/.stowage/journal`)).toEqual([]);
    await crippled.settle();
    expect(await fs.readdir(`${STORE}/.stowage/deleting`)).toEqual([]);
  });
});
