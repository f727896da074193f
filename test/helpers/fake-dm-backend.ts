/** A devicemapper backend over the simulated kernel (fake-dm-kernel.ts) and memfs, for host tests. */
import { createFsFromVolume, Volume } from 'memfs';
import type { FsPort } from '../../src/core/fs-port.js';
import type { Logger } from '../../src/core/logger.js';
import { DevicemapperBackend, type DevicemapperTuning } from '../../src/backends/devicemapper/devicemapper-backend.js';
import { parseDevicemapperOptions } from '../../src/backends/devicemapper/dm-options.js';
import { FakeDmKernel } from './fake-dm-kernel.js';
import { createRequest } from '../../src/core/create-request.js';

export interface FakeDmSetup {
  fs: FsPort;
  kernel: FakeDmKernel;
  logs: string[];
  /** A backend on /pool/{data,meta}.img (pool "pool", 64 KiB blocks, 64M default volumes). */
  make(extra?: Record<string, string>, root?: string, tuning?: DevicemapperTuning): DevicemapperBackend;
  /** The persisted state file of pool "pool" under `root`. */
  readState(root?: string): Promise<Record<string, unknown>>;
  writeState(state: unknown, root?: string): Promise<void>;
}

export const POOL_OPTIONS = {
  'dm.datadev': '/pool/data.img',
  'dm.metadatadev': '/pool/meta.img',
  'dm.thinpoolname': 'pool',
  'dm.thinpoolblocksize': '128',
  'dm.defaultvolumesize': '64M',
};

export async function setupFakeDm(): Promise<FakeDmSetup> {
  // memfs implements the fs/promises surface stowage uses; its types differ only nominally.
  const fs = createFsFromVolume(new Volume()).promises as unknown as FsPort;
  const kernel = new FakeDmKernel(fs);
  await fs.mkdir('/proc/self', { recursive: true });
  await fs.writeFile('/proc/self/mounts', '');
  await fs.mkdir('/pool', { recursive: true });
  await fs.mkdir('/dev/mapper', { recursive: true });
  await fs.writeFile('/pool/data.img', '');
  await fs.writeFile('/pool/meta.img', '');
  const logs: string[] = [];
  const log: Logger = { info: (m) => logs.push(`info ${m}`), warn: (m) => logs.push(`warn ${m}`), error: (m) => logs.push(`error ${m}`) };
  const statePath = (root: string) => `${root}/devicemapper/pool.json`;
  // Claim transaction ids in the order they are drawn, so command sequences read plainly.
  let tx = 100;
  const newTransactionId = () => (tx += 1);
  return {
    fs, kernel, logs,
    make: (extra = {}, root = '/state', tuning = { udev: false, removeDelayMs: 0 }) => new DevicemapperBackend(
      { nodeId: 'node-a', root, fs, runner: kernel, log },
      parseDevicemapperOptions(Object.fromEntries(Object.entries({ ...POOL_OPTIONS, ...extra }).filter(([, v]) => v !== ''))),
      { newTransactionId, ...tuning }),
    readState: async (root = '/state') => JSON.parse(String(await fs.readFile(statePath(root), 'utf8'))) as Record<string, unknown>,
    writeState: async (state, root = '/state') => {
      await fs.mkdir(`${root}/devicemapper`, { recursive: true });
      await fs.writeFile(statePath(root), JSON.stringify(state));
    },
  };
}

export const request = (name: string, options: Record<string, number> = {}) =>
  createRequest(name, options, { createdAt: '2026-01-01T00:00:00.000Z', createdBy: 'node-a' });
