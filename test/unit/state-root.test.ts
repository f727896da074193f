import { chmod, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { prepareStateRoot } from '../../src/core/state-root.js';
import { memoryLogger, type MemoryLogger } from '../helpers/memory-logger.js';

const modeOf = async (path: string) => (await stat(path)).mode & 0o777;

describe('the state root', () => {
  let dir: string;
  let log: MemoryLogger;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'stowage-state-root-'));
    log = memoryLogger();
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('is made 0700 when it does not exist', async () => {
    const root = join(dir, 'a', 'root');
    await prepareStateRoot(root, log);
    expect(await modeOf(root)).toBe(0o700);
    expect(log.lines).toEqual([]);
  });

  it('is tightened to 0700 when it is empty (or holds only lost+found) or holds stowage\'s state', async () => {
    for (const [name, content] of [['empty', undefined], ['fresh-fs', 'lost+found'], ['earlier', 'mounts.json'], ['locked', 'daemon.lock']] as const) {
      const root = join(dir, name);
      await mkdir(root, { mode: 0o755 });
      await chmod(root, 0o755);
      if (content === 'lost+found') await mkdir(join(root, content));
      else if (content) await writeFile(join(root, content), '{}');
      await prepareStateRoot(root, log);
      expect(await modeOf(root), name).toBe(0o700);
    }
    expect(log.lines).toEqual([]);
  });

  it('keeps the mode of a directory that already held other things (a mistyped --root), and says so', async () => {
    const root = join(dir, 'var-lib');
    await mkdir(join(root, 'apt'), { recursive: true });
    await writeFile(join(root, 'other-service.db'), 'x');
    await chmod(root, 0o755);
    await prepareStateRoot(root, log);
    expect(await modeOf(root)).toBe(0o755);
    expect(log.lines).toHaveLength(1);
    expect(log.lines[0]).toContain(`warn the state root ${root} already held other things`);
    expect(log.lines[0]).toContain('its mode is left as it is');
  });

  it('refuses a root that is not a directory', async () => {
    const root = join(dir, 'file');
    await writeFile(root, 'x');
    await expect(prepareStateRoot(root)).rejects.toThrow(`the state root ${root} is not a directory`);
  });
});
