/**
 * Re-captures test/fixtures/dm/ from a real kernel: boots the test VM once, runs
 * capture-fixtures.sh inside, copies what it wrote. Run as root: `npx tsx test/vm/capture-fixtures.ts`.
 * The thin-delta-restored*.xml fixtures come from the host's thin tools on metadata restored from
 * thin-dump.xml (see test/fixtures/dm/README.md).
 */
import { cp, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VM_DIR, ensureVmImage, runInVm } from './dm-vm.js';

const target = join(VM_DIR, '..', 'fixtures', 'dm');
const work = await mkdtemp(join(tmpdir(), 'stowage-capture-'));
try {
  const image = await ensureVmImage((line) => console.log(line));
  const run = await runInVm({ image, work, command: join(VM_DIR, 'capture-fixtures.sh'), timeoutMs: 300_000, onLine: (l) => console.log(l) });
  if (run.exitCode !== 0) throw new Error(`capture failed (exit ${run.exitCode})`);
  for (const file of await readdir(join(work, 'fixtures'))) await cp(join(work, 'fixtures', file), join(target, file));
  console.log(`fixtures copied to ${target}`);
} finally {
  await rm(work, { recursive: true, force: true });
}
