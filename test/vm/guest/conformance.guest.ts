/** The base and snapshot conformance suites, on a real thin pool (inside the test VM). */
import * as realFs from 'node:fs/promises';
import { join } from 'node:path';
import { describeBackendConformance, describeSnapshotConformance, type ConformanceHarness } from '../../../src/testing/index.js';
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
