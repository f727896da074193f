import { ContainerModule } from 'inversify';
import type { Logger } from '../../core/logger.js';
import { TOKENS } from '../../core/tokens.js';
import { SHELL_TOKENS } from '../tokens.js';
import { DockerEngine } from './docker-engine.js';

export interface EngineSettings {
  /** The engine's unix socket; undefined when there is none to ask. */
  socket: string | undefined;
  /** The driver name Docker knows this plugin by (the socket's base name). */
  driverName: string;
}

/** The Docker engine adapter, bound as the core's ContainerReferences port. */
export const dockerEngineModule = new ContainerModule(({ bind }) => {
  bind<DockerEngine>(SHELL_TOKENS.DockerEngine).toDynamicValue((ctx) => {
    const settings = ctx.get<EngineSettings>(SHELL_TOKENS.EngineSettings);
    return new DockerEngine(settings.socket, settings.driverName, ctx.get<Logger>(TOKENS.Logger));
  });
  bind(TOKENS.ContainerReferences).toService(SHELL_TOKENS.DockerEngine);
});
