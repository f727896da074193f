import { ErrorCodes, StowageError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { DEFAULT_BLOCK_SECTORS, type DevicemapperOptions } from './dm-options.js';
import type { Dmsetup } from './dmsetup.js';
import { MIN_FREE_FRACTION } from './pool-health.js';
import type { PoolDevices } from './pool-devices.js';
import { emptyState, type PoolStateFile } from './pool-state.js';
import { parsePoolTable } from './table-parser.js';

export interface PoolSetup {
  dm: Dmsetup;
  devices: PoolDevices;
  log: Logger;
  statePath: string;
  options: DevicemapperOptions;
}

const unavailable = (message: string) => new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, message);

/** State for an active pool: the saved one, or a new one for a pool stowage did not create. */
export function adoptPool(setup: PoolSetup, saved: PoolStateFile | undefined, text: string): PoolStateFile {
  const { options, log } = setup;
  const name = options.poolName;
  let table;
  try {
    table = parsePoolTable(text);
  } catch {
    throw unavailable(`device-mapper device ${name} exists but is not a thin pool; choose another dm.thinpoolname`);
  }
  if (table.features.includes('skip_block_zeroing')) {
    throw unavailable(`thin pool ${name} runs with skip_block_zeroing: new volumes could show data of removed ones, ` +
      'so stowage refuses it; reload the pool without that feature');
  }
  const blockSectors = saved?.pool.blockSectors ?? table.blockSectors;
  checkBlockSize(options, table.blockSectors);
  log.info(`using active thin pool ${name}`);
  return saved ?? emptyState({
    name,
    ...(options.dataDevice ? { dataDevice: options.dataDevice, metadataDevice: options.metadataDevice } : {}),
    blockSectors, createdByStowage: false, createdAt: new Date().toISOString(),
  }, -1);
}

function checkBlockSize(options: DevicemapperOptions, actual: number): void {
  if (options.blockSectors !== undefined && options.blockSectors !== actual) {
    throw new StowageError(ErrorCodes.INVALID_OPTION, `dm.thinpoolblocksize=${options.blockSectors} does not match ` +
      `thin pool ${options.poolName}, which uses blocks of ${actual} sectors; drop the option or set it to ${actual}`);
  }
}

/**
 * Creates the pool on its devices (files attached as loop devices). A new pool gets a wiped
 * metadata superblock, unless the device holds metadata no state knows of: that is refused.
 */
export async function activatePool(setup: PoolSetup, saved: PoolStateFile | undefined): Promise<PoolStateFile> {
  const { devices, dm, log, options } = setup;
  const name = options.poolName;
  const dataFile = options.dataDevice ?? saved?.pool.dataDevice;
  const metaFile = options.metadataDevice ?? saved?.pool.metadataDevice;
  if (!dataFile || !metaFile) {
    throw unavailable(`thin pool ${name} is not active and stowage knows no devices for it; set dm.datadev and ` +
      'dm.metadatadev (block devices or files) to create it, or activate the pool before starting stowage');
  }
  if (saved) checkBlockSize(options, saved.pool.blockSectors);
  const blockSectors = saved?.pool.blockSectors ?? options.blockSectors ?? DEFAULT_BLOCK_SECTORS;
  const data = await devices.blockDeviceFor(dataFile, 'dm.datadev');
  const meta = await devices.blockDeviceFor(metaFile, 'dm.metadatadev');
  if (!saved) {
    if (await devices.holdsThinMetadata(meta)) {
      throw unavailable(`dm.metadatadev=${metaFile} already holds thin-pool metadata that stowage has no record of ` +
        `(${setup.statePath} is missing). To use that pool, activate it (dmsetup create ${name} --table ...) and ` +
        `start stowage again; to start over and lose its volumes, wipe its first 4 KiB`);
    }
    await devices.wipeMetadataSuperblock(meta);
  }
  const sectors = Math.floor((await devices.sizeSectors(data)) / blockSectors) * blockSectors;
  if (sectors === 0) throw unavailable(`dm.datadev=${dataFile} is smaller than one pool block (${blockSectors} sectors)`);
  const lowWater = Math.max(1, Math.floor((sectors / blockSectors) * MIN_FREE_FRACTION));
  await dm.create(name, `0 ${sectors} thin-pool ${meta} ${data} ${blockSectors} ${lowWater} 1 error_if_no_space`);
  log.info(`${saved ? 're-created' : 'created'} thin pool ${name} on ${dataFile} (data) and ${metaFile} (metadata)`);
  const pool = { dataDevice: dataFile, metadataDevice: metaFile };
  if (saved) return { ...saved, pool: { ...saved.pool, ...pool } };
  return emptyState({ name, ...pool, blockSectors, createdByStowage: true, createdAt: new Date().toISOString() }, -1);
}
