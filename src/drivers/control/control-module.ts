import type { Router } from 'express';
import { ContainerModule } from 'inversify';
import { TOKENS } from '../../core/tokens.js';
import type { VolumeManager } from '../../core/volume-manager.js';
import { SHELL_TOKENS } from '../tokens.js';
import { controlRoutes } from './routes.js';

/** The control API the CLI talks to, over the volume manager. */
export const controlModule = new ContainerModule(({ bind }) => {
  bind<Router>(SHELL_TOKENS.ControlRouter).toDynamicValue((ctx) => controlRoutes(ctx.get<VolumeManager>(TOKENS.VolumeManager)));
});
