import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ConformanceHarness } from 'stowage/testing';
import { MemoryBackend, type Flaw } from './memory-backend.js';

/** A fresh MemoryBackend in a temporary directory, with every hook of the suite's optional checks. */
export async function memoryHarness(flaw?: Flaw): Promise<ConformanceHarness> {
  const dir = await mkdtemp(join(tmpdir(), 'memory-backend-'));
  const backend = new MemoryBackend(dir, flaw);
  await backend.init();
  return {
    backend,
    plantData: async (name, file, content) => {
      await mkdir(join(dir, 'volumes', name), { recursive: true });
      await writeFile(join(dir, 'volumes', name, file), content);
    },
    dataRoot: dir,
    unavailable: async () => ({ backend: new MemoryBackend(join(dir, 'absent')), missing: join(dir, 'absent') }),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}
