import * as nodeFs from 'node:fs/promises';
import { join } from 'node:path';
import type { Backend, CreateRequest, RemoveRequest } from '../core/backend.js';
import { createRequest as buildRequest } from '../core/create-request.js';
import type { FsPort } from '../core/fs-port.js';
import type { VolumeOptions } from '../core/options.js';

/** What a backend's test file provides to run the base suite: a fresh, initialised backend per test. */
export interface ConformanceHarness {
  backend: Backend;
  /** File system on which the paths returned by attach live; node:fs/promises when omitted. */
  fs?: FsPort;
  /** Removes what the test left (the suite disposes the backend first). */
  cleanup?(): Promise<void>;
  /**
   * Puts `file` with `content` where the data of a volume named `name` would go, without making
   * a volume (for vfs: a directory in the store). Omit it for a backend where no data can be
   * there before the volume is made (devicemapper: a fresh thin device); the adopt checks are
   * then skipped.
   */
  plantData?(name: string, file: string, content: string): Promise<void>;
  /**
   * A directory on `fs` under which the backend keeps every volume's data, including data it
   * moves aside to delete. The suite looks there for deleted files after `dispose`; without it
   * that check is skipped.
   */
  dataRoot?: string;
  /**
   * Builds (without initialising) a backend of the same kind whose storage is missing, and says
   * what is missing: `init` must fail with E_BACKEND_UNAVAILABLE naming it. Without it that
   * check is skipped.
   */
  unavailable?(): Promise<{ backend: Backend; missing: string }>;
}

/** Two backends of one kind, on two nodes, over the same storage: for the shared-store suite. */
export interface SharedStoreHarness {
  first: Backend;
  second: Backend;
  fs?: FsPort;
  cleanup?(): Promise<void>;
}

export const NODE = 'conformance-node';

/** The one place the suites build requests, so a change of the request shape is made once. */
export function createRequest(name: string, options: VolumeOptions = {}, createdBy = NODE): CreateRequest {
  return buildRequest(name, options, { createdAt: new Date().toISOString(), createdBy });
}

export function removeRequest(retain: boolean, lease?: RemoveRequest['lease']): RemoveRequest {
  return lease ? { retain, lease } : { retain };
}

export function fsOf(h: { fs?: FsPort }): FsPort {
  return h.fs ?? nodeFs;
}

/**
 * Paths of the files named `prefix*` under `dir`. Never follows a symbolic link: what a backend
 * left behind is judged by what is in its own directories.
 */
export async function findFiles(fs: FsPort, dir: string, prefix: string): Promise<string[]> {
  const found: string[] = [];
  let entries: string[];
  try {
    entries = (await fs.readdir(dir)).map(String);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return found;
    throw err;
  }
  for (const entry of entries) {
    const path = join(dir, entry);
    const stat = await fs.lstat(path).catch(() => undefined);
    if (!stat) continue; // removed while we looked: not left behind
    if (stat.isDirectory()) found.push(...(await findFiles(fs, path, prefix)));
    else if (entry.startsWith(prefix)) found.push(path);
  }
  return found;
}
