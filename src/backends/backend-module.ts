import { ContainerModule } from 'inversify';
import type { Backend } from '../core/backend.js';
import type { BackendContext } from './context.js';

export type BackendFactory = (ctx: BackendContext, options: Record<string, string>) => Backend;

/** What a backend's module binds: its name (`--backend NAME`) and how to make it from its options. */
export interface BackendRegistration {
  readonly name: string;
  readonly create: BackendFactory;
}

/** Every backend module binds one registration here; the container picks one by name. */
export const BACKEND_REGISTRATION = Symbol.for('stowage.BackendRegistration');

/** A backend's ContainerModule: registers its factory under its name, and nothing else. */
export function backendModule(name: string, create: BackendFactory): ContainerModule {
  return new ContainerModule(({ bind }) => {
    bind<BackendRegistration>(BACKEND_REGISTRATION).toConstantValue({ name, create });
  });
}
