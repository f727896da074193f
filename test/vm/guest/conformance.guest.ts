/** The base, snapshot and backup conformance suites, on a real thin pool (inside the test VM). */
import * as realFs from 'node:fs/promises';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VfsBackend } from '../../../src/backends/vfs/vfs-backend.js';
import { parseVfsOptions } from '../../../src/backends/vfs/vfs-options.js';
import { ExecaCommandRunner } from '../../../src/core/command-runner.js';
import {
  describeBackendConformance, describeBackupConformance, describeSnapshotConformance, type ConformanceHarness,
} from '../../../src/testing/index.js';
import { memoryLogger } from '../../helpers/memory-logger.js';
import { destroyPool, makeBackend, makePoolFiles } from './dm-harness.js';

async function realPool(): Promise<ConformanceHarness> {
  const fx = await makePoolFiles({ dataMiB: 512, volumeSize: '8M' });
  const backend = makeBackend(fx);
  await backend.init();
  return {
    backend, fs: realFs, dataRoot: join(fx.root, 'devicemapper'),
    // Another pool's name: the first pool is active, and an active pool is adopted whatever its devices.
    unavailable: async () => {
      const missing = join(fx.dir, 'no-such-data.img');
      const options = { ...fx.options, 'dm.datadev': missing, 'dm.thinpoolname': `${fx.poolName}-other` };
      return { backend: makeBackend({ ...fx, root: join(fx.dir, 'other-root'), options }), missing };
    },
    cleanup: () => destroyPool(fx),
  };
}

describeBackendConformance('devicemapper on a real thin pool', realPool);
describeSnapshotConformance('devicemapper on a real thin pool', realPool);

describeBackupConformance('devicemapper on a real thin pool', async () => {
  const fx = await makePoolFiles({ dataMiB: 512, volumeSize: '32M' });
  const vfsDir = await mkdtemp(join(tmpdir(), 'dm-backup-vfs-'));
  return {
    // Not initialised: the core does that, as in the daemon, with its state in the same root.
    backend: makeBackend(fx), root: fx.root, timeoutMs: 900_000,
    // A devicemapper backup restored into vfs: a file-level backup moves between backends.
    other: {
      label: 'vfs in the VM', root: vfsDir,
      backend: new VfsBackend({ nodeId: 'vm-node', root: vfsDir, fs: realFs, runner: new ExecaCommandRunner(), log: memoryLogger() },
        parseVfsOptions({ 'vfs.path': join(vfsDir, 'store') }, vfsDir)),
      cleanup: () => rm(vfsDir, { recursive: true, force: true }),
    },
    cleanup: () => destroyPool(fx),
  };
});
