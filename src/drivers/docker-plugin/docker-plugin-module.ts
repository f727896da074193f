import { ContainerModule } from 'inversify';
import { TOKENS } from '../../core/tokens.js';
import type { VolumeManager } from '../../core/volume-manager.js';
import { SHELL_TOKENS } from '../tokens.js';
import { dockerPluginHandlers, type PluginHandlers } from './routes.js';

/** Docker's volume plugin protocol over the volume manager. */
export const dockerPluginModule = new ContainerModule(({ bind }) => {
  bind<PluginHandlers>(SHELL_TOKENS.PluginHandlers)
    .toDynamicValue((ctx) => dockerPluginHandlers(ctx.get<VolumeManager>(TOKENS.VolumeManager)));
});
