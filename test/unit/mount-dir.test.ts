import { createFsFromVolume, Volume } from 'memfs';
import { beforeEach, describe, expect, it } from 'vitest';
import type { Backend } from '../../src/core/backend.js';
import type { CommandResult, CommandRunner } from '../../src/core/command-runner.js';
import type { FsPort } from '../../src/core/fs-port.js';
import { silentLogger } from '../../src/core/logger.js';
import { MountDirBackend, STATE_ID_FILE, validateMountDir } from '../../src/core/mount-dir.js';

type MemFs = ReturnType<typeof createFsFromVolume>;

/**
 * mount and umount over memfs: a bind mount becomes a symlink from the target to the source (so
 * stat sees the source's directory, as it does through a bind) and a line in /proc/self/mounts.
 */
class FakeMounts implements CommandRunner {
  readonly calls: string[][] = [];
  constructor(private readonly mem: MemFs) {}

  async run(program: string, args: readonly string[]): Promise<CommandResult> {
    this.calls.push([program, ...args]);
    const fs = this.mem.promises;
    const mounts = String(await fs.readFile('/proc/self/mounts', 'utf8')).split('\n').filter(Boolean);
    if (program === 'mount' && args[0] === '--bind') {
      const [source, target] = [args[1]!, args[2]!];
      await fs.rmdir(target).catch(() => fs.unlink(target));
      await fs.symlink(source, target);
      mounts.push(`/dev/vda ${target} ext4 rw 0 0`);
    } else if (program === 'umount') {
      const target = args[0]!;
      const at = mounts.findLastIndex((line) => line.split(' ')[1] === target);
      if (at === -1) return { stdout: '', stderr: `umount: ${target}: not mounted.`, exitCode: 32 };
      mounts.splice(at, 1);
      await fs.unlink(target);
      await fs.mkdir(target);
    } else {
      return { stdout: '', stderr: `unexpected ${program}`, exitCode: 1 };
    }
    await fs.writeFile('/proc/self/mounts', mounts.map((l) => `${l}\n`).join(''));
    return { stdout: '', stderr: '', exitCode: 0 };
  }
}

describe('validateMountDir', () => {
  it('keeps absolute paths and drops a trailing slash', () => {
    expect(validateMountDir('/mnt/stowage')).toBe('/mnt/stowage');
    expect(validateMountDir('/mnt/stowage/')).toBe('/mnt/stowage');
  });
  it.each(['mnt/stowage', '/', '//', '/mnt/../etc', '/mnt/./x', ''])('refuses %j', (dir) => {
    expect(() => validateMountDir(dir)).toThrow(/absolute path other than \//);
  });
});

describe('MountDirBackend', () => {
  let mem: MemFs;
  let fs: FsPort;
  let runner: FakeMounts;
  /** A backend whose volumes are directories under `<state>/volumes`, as vfs's are by default. */
  const backendOn = (state = '/state'): MountDirBackend => {
    const inner: Backend = {
      name: 'dirs',
      capabilities: { scope: 'local', sizeLimit: 'recorded' },
      init: async () => undefined,
      dispose: async () => undefined,
      create: () => Promise.reject(new Error('not used')),
      get: async () => undefined,
      list: async () => [],
      remove: async () => ({}),
      attach: async (name) => {
        await fs.mkdir(`${state}/volumes/${name}`, { recursive: true });
        return `${state}/volumes/${name}`;
      },
      detach: async () => undefined,
      volumeStatus: async () => ({}),
      describe: async () => ({}),
    };
    return new MountDirBackend(inner, '/mnt/stowage', runner, fs, silentLogger, state);
  };

  beforeEach(async () => {
    mem = createFsFromVolume(new Volume());
    // memfs implements the fs/promises surface stowage uses; its types differ only nominally.
    fs = mem.promises as unknown as FsPort;
    await mem.promises.mkdir('/proc/self', { recursive: true });
    await mem.promises.writeFile('/proc/self/mounts', '');
    runner = new FakeMounts(mem);
  });

  it('presents an attached volume at <mount dir>/<name>, binds it once, and unbinds on detach', async () => {
    const backend = backendOn();
    await backend.init();
    expect(await backend.attach('v1')).toBe('/mnt/stowage/v1');
    await fs.writeFile('/mnt/stowage/v1/f', 'through the bind');
    expect(String(await fs.readFile('/state/volumes/v1/f', 'utf8'))).toBe('through the bind');
    // Idempotent: a second attach (a restarted daemon reconciling) finds the bind in place.
    expect(await backend.attach('v1')).toBe('/mnt/stowage/v1');
    expect(runner.calls.filter((c) => c[0] === 'mount')).toHaveLength(1);

    await backend.detach('v1');
    expect(runner.calls.at(-1)).toEqual(['umount', '/mnt/stowage/v1']);
    expect(String(await fs.readFile('/proc/self/mounts', 'utf8'))).toBe('');
    await expect(fs.stat('/mnt/stowage/v1')).rejects.toThrow(/ENOENT/);
    expect(String(await fs.readFile('/state/volumes/v1/f', 'utf8'))).toBe('through the bind');
  });

  it('replaces another mount found at the volume\'s path', async () => {
    const backend = backendOn();
    await backend.init();
    await fs.mkdir('/elsewhere');
    await fs.mkdir('/mnt/stowage/v1');
    await runner.run('mount', ['--bind', '/elsewhere', '/mnt/stowage/v1']);
    expect(await backend.attach('v1')).toBe('/mnt/stowage/v1');
    expect(runner.calls.slice(1)).toEqual([['umount', '/mnt/stowage/v1'], ['mount', '--bind', '/state/volumes/v1', '/mnt/stowage/v1']]);
  });

  it('refuses to start when the state directory comes up empty after serving volumes, and starts once it is back', async () => {
    await backendOn().init();
    const id = String(await fs.readFile(`/state/${STATE_ID_FILE}`, 'utf8'));
    expect(String(await fs.readFile(`/mnt/stowage/${STATE_ID_FILE}`, 'utf8'))).toBe(id);

    await expect(backendOn('/fresh').init()).rejects.toThrow(/state directory \/fresh holds no stowage state.*refusing to start/);
    // Refusing changed nothing: no state was made up in the empty directory.
    await expect(fs.stat(`/fresh/${STATE_ID_FILE}`)).rejects.toThrow(/ENOENT/);

    await fs.mkdir('/other', { recursive: true });
    await fs.writeFile(`/other/${STATE_ID_FILE}`, 'another-state\n');
    await expect(backendOn('/other').init()).rejects.toThrow(/holds other state \(another-state\)/);

    await backendOn().init();
  });
});
