/** The shared Backend conformance suite, on a real thin pool (inside the test VM). */
import * as realFs from 'node:fs/promises';
import { describeBackendConformance } from '../../conformance/backend-suite.js';
import { destroyPool, makeBackend, makePoolFiles } from './dm-harness.js';

describeBackendConformance('devicemapper on a real thin pool', async () => {
  const fx = await makePoolFiles({ dataMiB: 512, volumeSize: '8M' });
  const backend = makeBackend(fx);
  await backend.init();
  return { backend, fs: realFs, cleanup: () => destroyPool(fx) };
});
