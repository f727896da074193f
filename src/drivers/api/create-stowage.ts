import { hostname } from 'node:os';
import { ContainerModule } from 'inversify';
import type { Backend } from '../../core/backend.js';
import type { Logger } from '../../core/logger.js';
import { silentLogger } from '../../core/logger.js';
import type { FsPort } from '../../core/fs-port.js';
import { TOKENS } from '../../core/tokens.js';
import type {
  CreateResult, RemovePolicy, RemoveResult, VolumeInfo, VolumeManager,
} from '../../core/volume-manager.js';
import { buildContainer } from '../../container.js';
import { SHELL_TOKENS } from '../tokens.js';

export interface StowageOptions {
  /** Backend name or your own Backend implementation. @default 'vfs' */
  backend?: string | Backend;
  /** Backend options, e.g. `{ 'vfs.path': '/mnt/shared/volumes' }`. */
  options?: Record<string, string>;
  /** Node-local state directory. @default '/var/lib/stowage' */
  root?: string;
  /** @default the host name */
  nodeId?: string;
  /** @default 'delete' */
  onRemove?: RemovePolicy;
  /** @default silent */
  logger?: Logger;
  /** File system to use; tests pass memfs. @default node:fs/promises */
  fs?: FsPort;
}

/** The same operations the Docker plugin offers, as plain async calls. */
export interface Stowage {
  create(name: string, options?: Record<string, string>): Promise<CreateResult>;
  /** `retain` overrides the daemon's `onRemove` policy for this call. */
  remove(name: string, options?: { retain?: boolean }): Promise<RemoveResult>;
  list(): Promise<VolumeInfo[]>;
  inspect(name: string): Promise<VolumeInfo>;
  mount(name: string, mountId: string): Promise<string>;
  unmount(name: string, mountId: string): Promise<void>;
  info(): Promise<Record<string, unknown>>;
  /** Waits for background work and releases the backend. */
  close(): Promise<void>;
  readonly manager: VolumeManager;
}

/** The embedding API's shell: the Stowage object over the volume manager. */
export const apiModule = new ContainerModule(({ bind }) => {
  bind<Stowage>(SHELL_TOKENS.Stowage).toDynamicValue((ctx) => stowageOver(ctx.get<VolumeManager>(TOKENS.VolumeManager)));
});

function stowageOver(manager: VolumeManager): Stowage {
  return {
    manager,
    create: (name, opts) => manager.create(name, opts ?? {}),
    remove: (name, opts) => manager.remove(name, opts ?? {}),
    list: () => manager.list(),
    inspect: (name) => manager.get(name),
    mount: (name, id) => manager.mount(name, id),
    unmount: (name, id) => manager.unmount(name, id),
    info: () => manager.info(),
    close: () => manager.dispose(),
  };
}

export async function createStowage(options: StowageOptions = {}): Promise<Stowage> {
  const stowage = buildContainer({
    backend: options.backend ?? 'vfs',
    backendOptions: options.options ?? {},
    root: options.root ?? '/var/lib/stowage',
    nodeId: options.nodeId ?? hostname(),
    onRemove: options.onRemove ?? 'delete',
    logger: options.logger ?? silentLogger,
    fs: options.fs,
  }, apiModule).get<Stowage>(SHELL_TOKENS.Stowage);
  await stowage.manager.init();
  return stowage;
}
