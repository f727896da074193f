import type { Router } from 'express';
import { ContainerModule } from 'inversify';
import type { BackupService } from '../../core/backup/service-contract.js';
import type { Logger } from '../../core/logger.js';
import { TOKENS } from '../../core/tokens.js';
import type { VolumeManager } from '../../core/volume-manager.js';
import { SHELL_TOKENS } from '../tokens.js';
import { JobRegistry } from './jobs.js';
import { importLazily } from '../../core/lazy-import.js';

/** The control API the CLI talks to, over the volume manager, the backup service and the daemon's jobs. */
export const controlModule = new ContainerModule(({ bind }) => {
  bind<JobRegistry>(SHELL_TOKENS.Jobs).toDynamicValue((ctx) => new JobRegistry(ctx.get<Logger>(TOKENS.Logger)));
  // A loader: the routes and express load on the first control request (see createApp).
  bind<() => Promise<Router>>(SHELL_TOKENS.ControlRouter).toDynamicValue((ctx) => {
    const manager = ctx.get<VolumeManager>(TOKENS.VolumeManager);
    const jobs = ctx.get<JobRegistry>(SHELL_TOKENS.Jobs);
    const backups = ctx.get<BackupService>(TOKENS.BackupService, { optional: true });
    return async () => (await importLazily(() => import('./routes.js'), 'the control API\'s routes')).controlRoutes(manager, jobs, backups);
  });
});
