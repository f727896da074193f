/** The mount records a daemon saved under its --root (snapshot plus log), as it reads them at start. */
import * as realFs from 'node:fs/promises';
import type { FsPort } from '../../src/core/fs-port.js';
import { MountFiles, type StoredVolumeMounts } from '../../src/core/mount-log.js';

export async function readMountRecords(root: string, fs: FsPort = realFs as FsPort): Promise<Record<string, StoredVolumeMounts>> {
  return (await new MountFiles(fs, root, 'reader').read()).volumes;
}
