import type { CommandRunner } from '../core/command-runner.js';
import type { FsPort } from '../core/fs-port.js';
import type { Logger } from '../core/logger.js';

/** What every backend factory receives: node identity, its private state dir, and the I/O ports. */
export interface BackendContext {
  nodeId: string;
  /** Node-local state directory (`--root`). */
  root: string;
  fs: FsPort;
  runner: CommandRunner;
  log: Logger;
}
