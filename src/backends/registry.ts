import type { Backend } from '../core/backend.js';
import { ErrorCodes, StowageError } from '../core/errors.js';
import type { BackendContext } from './context.js';
import { createDevicemapperBackend } from './devicemapper/index.js';
import { createVfsBackend } from './vfs/index.js';
import { createGlusterfsBackend } from './glusterfs/index.js';

export type BackendFactory = (ctx: BackendContext, options: Record<string, string>) => Backend;

const FACTORIES: Record<string, BackendFactory> = {
  vfs: createVfsBackend,
  glusterfs: createGlusterfsBackend,
  devicemapper: createDevicemapperBackend,
};

export const BACKEND_NAMES = Object.keys(FACTORIES);

export function createBackend(name: string, ctx: BackendContext, options: Record<string, string>): Backend {
  const factory = FACTORIES[name];
  if (!factory) {
    throw new StowageError(ErrorCodes.INVALID_OPTION,
      `unknown backend ${JSON.stringify(name)}; available backends: ${BACKEND_NAMES.join(', ')}`);
  }
  return factory(ctx, options);
}
