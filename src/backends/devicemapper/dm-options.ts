import { isAbsolute } from 'node:path';
import { parseSize } from '../../core/options.js';
import { invalidOption as invalid, optionMap } from '../../core/schema/option-map.js';

export type DmFilesystem = 'ext4' | 'xfs';

/** Options of the devicemapper backend (`--opt`), with Convoy's names. */
export interface DevicemapperOptions {
  /**
   * `dm.datadev`: data device of the thin pool: a block device, or a plain file that stowage
   * attaches as a loop device. Needed to create the pool, or to re-create it after a reboot;
   * not needed to adopt a pool that is already active.
   * @default undefined (the value recorded in the pool state, if any)
   */
  dataDevice?: string;
  /**
   * `dm.metadatadev`: metadata device of the thin pool (block device or plain file, as above).
   * @default undefined (the value recorded in the pool state, if any)
   */
  metadataDevice?: string;
  /**
   * `dm.thinpoolname`: device-mapper name of the pool (`/dev/mapper/<name>`). An active pool of
   * this name is adopted; otherwise it is created on the two devices.
   * @default "stowage-pool"
   */
  poolName: string;
  /**
   * `dm.thinpoolblocksize`: pool block (allocation and snapshot copy unit) in 512-byte sectors,
   * 128 (64 KiB) to 2097152 (1 GiB), a multiple of 128. Used when creating a pool; an existing
   * pool keeps its block size, and a different value given here is refused.
   * @default 4096 (2 MiB, as Convoy) for a new pool
   */
  blockSectors?: number;
  /**
   * `dm.defaultvolumesize`: size of a volume created without a `size` option.
   * @default 107374182400 (100G, as Convoy)
   */
  defaultVolumeSize: number;
  /**
   * `dm.fs`: filesystem made on each new volume.
   * @default "ext4"
   */
  filesystem: DmFilesystem;
}

export const DEFAULT_POOL_NAME = 'stowage-pool';
export const DEFAULT_BLOCK_SECTORS = 4096;
export const DEFAULT_VOLUME_SIZE = 100 * 2 ** 30;
/** mkfs.xfs (xfsprogs 5.19 and later) refuses filesystems smaller than 300 MiB. */
export const XFS_MIN_BYTES = 300 * 2 ** 20;


/** Device-mapper names become /dev/mapper entries and argv items: keep them plain and short. */
export function validatePoolName(name: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.+-]{0,95}$/.test(name)) {
    throw invalid(`dm.thinpoolname=${JSON.stringify(name)}: use 1 to 96 letters, digits, "_", ".", "+" or "-", starting with a letter or digit`);
  }
  return name;
}

export function validateBlockSectors(raw: string): number {
  const value = /^\d+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(value) || value < 128 || value > 2097152 || value % 128 !== 0) {
    throw invalid(`dm.thinpoolblocksize=${JSON.stringify(raw)}: expected a number of 512-byte sectors from 128 to 2097152 ` +
      'that is a multiple of 128 (for example 128 = 64 KiB, 4096 = 2 MiB)');
  }
  return value;
}

function devicePath(raw: string, key: string): string {
  if (!isAbsolute(raw) || /\s/.test(raw)) {
    throw invalid(`${key}=${JSON.stringify(raw)}: expected the absolute path of a block device or file, without spaces`);
  }
  return raw;
}

const dmOptions = optionMap('devicemapper', {
  'dm.datadev': devicePath,
  'dm.metadatadev': devicePath,
  'dm.thinpoolname': validatePoolName,
  'dm.thinpoolblocksize': validateBlockSectors,
  'dm.defaultvolumesize': parseSize,
  'dm.fs': (value, key): DmFilesystem => {
    if (value !== 'ext4' && value !== 'xfs') throw invalid(`${key}=${JSON.stringify(value)}: expected ext4 or xfs`);
    return value;
  },
});

export function parseDevicemapperOptions(raw: Record<string, string>): DevicemapperOptions {
  const given = dmOptions.parse(raw);
  const dataDevice = given['dm.datadev'];
  const metadataDevice = given['dm.metadatadev'];
  if ((dataDevice === undefined) !== (metadataDevice === undefined)) {
    throw invalid('dm.datadev and dm.metadatadev go together: give both, or neither to adopt an active pool');
  }
  if (dataDevice !== undefined && dataDevice === metadataDevice) {
    throw invalid('dm.datadev and dm.metadatadev must be different devices');
  }
  const filesystem = given['dm.fs'] ?? 'ext4';
  const defaultVolumeSize = given['dm.defaultvolumesize'] ?? DEFAULT_VOLUME_SIZE;
  if (filesystem === 'xfs' && defaultVolumeSize < XFS_MIN_BYTES) {
    throw invalid(`dm.defaultvolumesize must be at least 300M with dm.fs=xfs (mkfs.xfs refuses smaller filesystems)`);
  }
  const blockSectors = given['dm.thinpoolblocksize'];
  return {
    ...(dataDevice !== undefined ? { dataDevice } : {}),
    ...(metadataDevice !== undefined ? { metadataDevice } : {}),
    poolName: given['dm.thinpoolname'] ?? DEFAULT_POOL_NAME,
    ...(blockSectors !== undefined ? { blockSectors } : {}),
    defaultVolumeSize,
    filesystem,
  };
}
