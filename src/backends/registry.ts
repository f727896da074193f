import { Container, type ContainerModule } from 'inversify';
import type { Backend } from '../core/backend.js';
import { ErrorCodes, StowageError } from '../core/errors.js';
import { BACKEND_REGISTRATION, type BackendRegistration } from './backend-module.js';
import type { BackendContext } from './context.js';
import { devicemapperModule } from './devicemapper/index.js';
import { glusterfsModule } from './glusterfs/index.js';
import { vfsModule } from './vfs/index.js';

export { backendModule, type BackendFactory, type BackendRegistration } from './backend-module.js';

/** The backends stowage ships. Adding one: its module (`backendModule` in its index.ts) and one line here. */
export const BACKEND_MODULES: readonly ContainerModule[] = [vfsModule, glusterfsModule, devicemapperModule];

/** Makes the backend registered as `name`; an unknown name is refused naming the registered ones. */
export function createRegisteredBackend(
  registrations: readonly BackendRegistration[], name: string, ctx: BackendContext, options: Record<string, string>,
): Backend {
  const matches = registrations.filter((r) => r.name === name);
  if (matches.length > 1) {
    // Two modules claiming one name is a packaging mistake; picking either would be a guess.
    throw new StowageError(ErrorCodes.INVALID_OPTION, `backend ${JSON.stringify(name)} is registered ${matches.length} times`);
  }
  const registration = matches[0];
  if (!registration) {
    throw new StowageError(ErrorCodes.INVALID_OPTION,
      `unknown backend ${JSON.stringify(name)}; available backends: ${registrations.map((r) => r.name).join(', ')}`);
  }
  return registration.create(ctx, options);
}

/** The names of the shipped backends, as their modules register them. */
export function backendNames(): string[] {
  return shippedRegistrations().map((r) => r.name);
}

/** A shipped backend outside a stowage container (tests of one backend's options). */
export function createBackend(name: string, ctx: BackendContext, options: Record<string, string>): Backend {
  return createRegisteredBackend(shippedRegistrations(), name, ctx, options);
}

function shippedRegistrations(): BackendRegistration[] {
  const container = new Container();
  container.load(...BACKEND_MODULES);
  return container.getAll<BackendRegistration>(BACKEND_REGISTRATION);
}
