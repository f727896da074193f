import { ErrorCodes, StowageError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { DEFAULT_BLOCK_SECTORS, type DevicemapperOptions } from './dm-options.js';
import type { Dmsetup } from './dmsetup.js';
import { MIN_FREE_FRACTION } from './pool-health.js';
import type { PoolDevices } from './pool-devices.js';
import { checkStateAgainstPool, poolMismatch } from './pool-ownership.js';
import { emptyState, type PoolStateFile } from './pool-state.js';
import type { ThinDump } from './thin-dump-parser.js';
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

export interface ActivatedPool {
  state: PoolStateFile;
  /** The metadata as read before activation (saved state only); a new pool has no devices. */
  dump?: ThinDump;
}

/**
 * Creates the pool on its devices (files attached as loop devices). stowage never writes to a
 * metadata device: a new pool needs one whose first 4 KiB are zero (the kernel then formats
 * it); one in use, or holding anything else, is refused with what holds it. With saved state,
 * the device must hold the pool that state describes (checked before activation).
 */
export async function activatePool(setup: PoolSetup, saved: PoolStateFile | undefined): Promise<ActivatedPool> {
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
  for (const [option, file, device] of [['dm.metadatadev', metaFile, meta], ['dm.datadev', dataFile, data]] as const) {
    const holders = await devices.holdersOf(device);
    if (holders.length > 0) {
      throw unavailable(`${option}=${file} (${device}) is in use by device-mapper device ${holders.join(', ')}, ` +
        `so thin pool ${name} cannot be made on it. If that is this pool under another name, start stowage with ` +
        `dm.thinpoolname=${holders[0]}; otherwise give devices nothing else uses`);
    }
  }
  const dump = saved ? await checkSavedMetadata(setup, saved, metaFile, meta) : await checkNewMetadata(setup, metaFile, meta);
  const sectors = Math.floor((await devices.sizeSectors(data)) / blockSectors) * blockSectors;
  if (sectors === 0) throw unavailable(`dm.datadev=${dataFile} is smaller than one pool block (${blockSectors} sectors)`);
  const lowWater = Math.max(1, Math.floor((sectors / blockSectors) * MIN_FREE_FRACTION));
  await dm.create(name, `0 ${sectors} thin-pool ${meta} ${data} ${blockSectors} ${lowWater} 1 error_if_no_space`);
  log.info(`${saved ? 're-created' : 'created'} thin pool ${name} on ${dataFile} (data) and ${metaFile} (metadata)`);
  const pool = { dataDevice: dataFile, metadataDevice: metaFile };
  if (saved) return { state: { ...saved, pool: { ...saved.pool, ...pool } }, ...(dump ? { dump } : {}) };
  return { state: emptyState({ name, ...pool, blockSectors, createdByStowage: true, createdAt: new Date().toISOString() }, -1) };
}

/** A new pool: only a blank device is formatted (by the kernel); anything else is someone's. */
async function checkNewMetadata(setup: PoolSetup, metaFile: string, meta: string): Promise<undefined> {
  const { devices, options, statePath } = setup;
  if (await devices.superblockIsBlank(meta)) return undefined;
  const check = await devices.checkMetadata(meta);
  if (check.valid) {
    throw unavailable(`dm.metadatadev=${metaFile} already holds thin-pool metadata that stowage has no record of ` +
      `(${statePath} is missing). To use that pool, activate it (dmsetup create ${options.poolName} --table ...) and ` +
      'start stowage again; to start over and lose its volumes, zero its first 4 KiB yourself ' +
      `(dd if=/dev/zero of=${metaFile} bs=4096 count=1 conv=notrunc)`);
  }
  if (check.busy) {
    throw unavailable(`dm.metadatadev=${metaFile} (${meta}) is open exclusively by something else (${check.detail}), so ` +
      'stowage cannot tell what it holds; it makes pools only on devices nothing uses');
  }
  throw unavailable(`dm.metadatadev=${metaFile} holds data that is not thin-pool metadata (thin_check: ${check.detail}). ` +
    'stowage makes a new pool only on a metadata device whose first 4 KiB are zero, and never wipes one itself; if ' +
    `nothing on it matters, zero them yourself (dd if=/dev/zero of=${metaFile} bs=4096 count=1 conv=notrunc)`);
}

/** Saved state: the metadata device must hold the pool the state describes, else nothing is activated. */
async function checkSavedMetadata(setup: PoolSetup, saved: PoolStateFile, metaFile: string, meta: string): Promise<ThinDump> {
  const { devices, statePath } = setup;
  const volumes = Object.keys(saved.volumes).length;
  const stop = (why: string) => unavailable(`dm.metadatadev=${metaFile} does not hold the pool the state describes: ${why}. ` +
    `stowage stops instead of making a fresh pool that would forget the ${volumes} volume(s) and ${saved.retained.length} ` +
    `retained volume(s) its state ${statePath} names, whose data blocks are still on dm.datadev. ` +
    'Give the right metadata device, or restore its metadata (thin_restore); to give up those volumes and start ' +
    `a new pool, move ${statePath} aside and zero the device's first 4 KiB`);
  if (await devices.superblockIsBlank(meta)) throw stop('it holds no thin-pool metadata (its first 4 KiB are zero)');
  const check = await devices.checkMetadata(meta);
  if (!check.valid) {
    if (check.busy) throw stop(`it is open exclusively by something else (${check.detail})`);
    throw stop(`thin_check finds no valid pool metadata on it (${check.detail}); if it is damaged, repair it with thin_repair`);
  }
  const dump = await devices.dumpMetadata(meta, false);
  if (dump.blockSectors !== saved.pool.blockSectors) {
    throw stop(`its pool uses blocks of ${dump.blockSectors} sectors, the state's ${saved.pool.blockSectors}`);
  }
  const mismatch = poolMismatch(checkStateAgainstPool(saved, dump), true);
  if (mismatch) throw stop(mismatch);
  return dump;
}
