import type { Backend } from '../../core/backend.js';
import { backendModule } from '../backend-module.js';
import type { BackendContext } from '../context.js';
import { DevicemapperBackend } from './devicemapper-backend.js';
import { parseDevicemapperOptions } from './dm-options.js';

export { DevicemapperBackend, type DevicemapperTuning } from './devicemapper-backend.js';
export { DmSnapshots, type BlockChanges } from './dm-snapshots.js';
export { parseDevicemapperOptions, type DevicemapperOptions, type DmFilesystem } from './dm-options.js';
export { MIN_FREE_FRACTION, evaluatePoolHealth, type PoolHealth } from './pool-health.js';

export function createDevicemapperBackend(ctx: BackendContext, raw: Record<string, string>): Backend {
  return new DevicemapperBackend(ctx, parseDevicemapperOptions(raw));
}

export const devicemapperModule = backendModule('devicemapper', createDevicemapperBackend);
