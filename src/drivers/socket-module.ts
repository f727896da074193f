import type { RequestListener } from 'node:http';
import type { Router } from 'express';
import { ContainerModule } from 'inversify';
import type { EngineSettings } from './docker-engine/docker-engine-module.js';
import { controlModule } from './control/control-module.js';
import { dockerPluginModule } from './docker-plugin/docker-plugin-module.js';
import type { PluginHandlers } from './docker-plugin/routes.js';
import { createApp } from './server.js';
import { SHELL_TOKENS } from './tokens.js';

/** The socket's one listener, dispatching to the plugin protocol and the control API. */
export const socketModule = new ContainerModule(({ bind }) => {
  bind<RequestListener>(SHELL_TOKENS.RequestListener).toDynamicValue((ctx) =>
    createApp(ctx.get<PluginHandlers>(SHELL_TOKENS.PluginHandlers), ctx.get<() => Promise<Router>>(SHELL_TOKENS.ControlRouter),
      ctx.get<EngineSettings>(SHELL_TOKENS.EngineSettings).driverName));
});

/** What a daemon (or a test standing in for one) loads to serve the socket. */
export const SOCKET_MODULES: readonly ContainerModule[] = [dockerPluginModule, controlModule, socketModule];
