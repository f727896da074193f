/** Injection tokens of the shells and adapters (the core's own are in core/tokens.ts). */
export const SHELL_TOKENS = {
  /** The Docker engine adapter itself, for what only the daemon asks of it (plugin activation). */
  DockerEngine: Symbol.for('stowage.shell.DockerEngine'),
  /** EngineSettings: which engine to ask, and the driver name its containers use for our volumes. */
  EngineSettings: Symbol.for('stowage.shell.EngineSettings'),
  /** Docker's volume plugin protocol: handlers by path. */
  PluginHandlers: Symbol.for('stowage.shell.PluginHandlers'),
  /** The daemon's JobRegistry: long operations that outlive the CLI that started them. */
  Jobs: Symbol.for('stowage.shell.Jobs'),
  /** The control API's express router. */
  ControlRouter: Symbol.for('stowage.shell.ControlRouter'),
  /** The one request listener the daemon's socket serves (both protocols). */
  RequestListener: Symbol.for('stowage.shell.RequestListener'),
  /** The embedding API's Stowage object. */
  Stowage: Symbol.for('stowage.shell.Stowage'),
} as const;
