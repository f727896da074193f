import { mkdir, mkdtemp, readdir, rm, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { VolumeRegistry, type RegistryEntry } from '../../src/backends/vfs/registry.js';
import type { FsPort } from '../../src/core/fs-port.js';
import { asFsPort, LocalFirstFs } from '../../src/core/local-fs.js';
import { silentLogger } from '../../src/core/logger.js';

function entry(name: string, createdBy: string): RegistryEntry {
  return { format: 1, record: { name, options: {}, createdAt: new Date().toISOString(), createdBy }, dataDir: name };
}

/** A port on the real filesystem that counts readdir calls on the registry directory. */
function countingPort(root: string, dir: string): { port: FsPort; readdirs: () => number } {
  const local = new LocalFirstFs();
  local.trustIfLocal(root);
  const port = asFsPort(local);
  const spy = vi.spyOn(port, 'readdir');
  return { port, readdirs: () => spy.mock.calls.filter(([path]) => path === dir).length };
}

/** Moves the directory's times a minute back, as if nothing had changed in it for that long. */
async function settle(dir: string): Promise<void> {
  const past = new Date(Date.now() - 60_000);
  await utimes(dir, past, past);
}

describe('vfs registry: List on a local filesystem', () => {
  let root = '';
  let dir = '';
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'stowage-registry-'));
    dir = join(root, 'volumes');
    await mkdir(dir);
  });
  afterEach(async () => { await rm(root, { recursive: true, force: true }); });

  it('reuses the names of a directory whose times have not changed since a settled readdir, and still shows what another node adds or removes', async () => {
    const here = countingPort(root, dir);
    const registry = new VolumeRegistry(here.port, dir, silentLogger);
    const other = new VolumeRegistry(countingPort(root, dir).port, dir, silentLogger);
    expect(await other.add(entry('first', 'node-b'))).toBe(true);

    // Changed just now: read at every List, since another change in the same clock tick would not show in the times.
    expect((await registry.list()).map((r) => r.name)).toEqual(['first']);
    expect((await registry.list()).map((r) => r.name)).toEqual(['first']);
    expect(here.readdirs()).toBe(2);

    await settle(dir);
    expect((await registry.list()).map((r) => r.name)).toEqual(['first']);
    const afterSettledRead = here.readdirs();
    expect((await registry.list()).map((r) => r.name)).toEqual(['first']);
    expect((await registry.list()).map((r) => r.name)).toEqual(['first']);
    expect(here.readdirs()).toBe(afterSettledRead);

    // Another node's create, the instant after: the directory's times moved, so it is read.
    expect(await other.add(entry('second', 'node-b'))).toBe(true);
    expect((await registry.list()).map((r) => r.name)).toEqual(['first', 'second']);
    expect(here.readdirs()).toBe(afterSettledRead + 1);

    await settle(dir);
    expect((await registry.list()).map((r) => r.name)).toEqual(['first', 'second']);
    await other.delete('first');
    expect((await registry.list()).map((r) => r.name)).toEqual(['second']);
    expect(await readdir(dir)).toContain('second.json');
  });

  it('reads the directory at every List when it is not on a registered local filesystem', async () => {
    const local = new LocalFirstFs();
    const port = asFsPort(local);
    const spy = vi.spyOn(port, 'readdir');
    const registry = new VolumeRegistry(port, dir, silentLogger);
    expect(await new VolumeRegistry(port, dir, silentLogger).add(entry('only', 'node-b'))).toBe(true);
    await settle(dir);
    for (let i = 0; i < 3; i++) expect((await registry.list()).map((r) => r.name)).toEqual(['only']);
    expect(spy.mock.calls.filter(([path]) => path === dir)).toHaveLength(3);
  });
});
