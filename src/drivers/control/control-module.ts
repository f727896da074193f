import type { Router } from 'express';
import { ContainerModule } from 'inversify';
import type { BackupService } from '../../core/backup/service-contract.js';
import type { Logger } from '../../core/logger.js';
import { TOKENS } from '../../core/tokens.js';
import type { VolumeManager } from '../../core/volume-manager.js';
import { SHELL_TOKENS } from '../tokens.js';
import { JobRegistry } from './jobs.js';
import { controlRoutes } from './routes.js';

/** The control API the CLI talks to, over the volume manager, the backup service and the daemon's jobs. */
export const controlModule = new ContainerModule(({ bind }) => {
  bind<JobRegistry>(SHELL_TOKENS.Jobs).toDynamicValue((ctx) => new JobRegistry(ctx.get<Logger>(TOKENS.Logger)));
  bind<Router>(SHELL_TOKENS.ControlRouter).toDynamicValue((ctx) => controlRoutes(
    ctx.get<VolumeManager>(TOKENS.VolumeManager),
    ctx.get<JobRegistry>(SHELL_TOKENS.Jobs),
    ctx.get<BackupService>(TOKENS.BackupService, { optional: true })));
});
