import type { Logger } from '../../core/logger.js';
import type { DockerEngine } from './docker-engine.js';
import { messageOf } from '../../core/errors.js';

/**
 * The engine reports a legacy plugin to Swarm only once it has activated it, and forgets that
 * when it restarts: until then a service with a stowage volume stays Pending ("missing plugin").
 * So the daemon has the engine activate it as soon as the plugin socket serves, and again every
 * time the engine's event stream comes back (an engine restart).
 */
export function keepPluginActivated(engine: DockerEngine, log: Logger): void {
  if (!engine.configured) return;
  const activate = () => {
    engine.activatePlugins().then(
      () => log.info(`the Docker engine at ${engine.socket} has activated the plugin`),
      (err: unknown) => log.warn(`could not have the Docker engine activate the plugin: ${messageOf(err)}`),
    );
  };
  activate();
  // The first connection may repeat the activation above (cheap); later ones follow a restart.
  engine.onConnect(activate);
}
