import type { Backend } from '../../core/backend.js';
import { backendModule } from '../backend-module.js';
import type { BackendContext } from '../context.js';
import { VfsBackend } from './vfs-backend.js';
import { parseVfsOptions } from './vfs-options.js';

export { VfsBackend } from './vfs-backend.js';
export { parseVfsOptions, type VfsOptions } from './vfs-options.js';

export function createVfsBackend(ctx: BackendContext, raw: Record<string, string>): Backend {
  return new VfsBackend(ctx, parseVfsOptions(raw, ctx.root));
}

export const vfsModule = backendModule('vfs', createVfsBackend);
