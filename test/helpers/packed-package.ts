/**
 * The package as users get it: `npm pack` of this tree (which runs `prepare`, the build), for
 * tests that install it into a temporary project.
 */
import { join, resolve } from 'node:path';
import { execa } from 'execa';

export const REPO = resolve(import.meta.dirname, '../..');

/** The environment without this vitest run's own variables, which would steer a nested one. */
export const npmEnv: Record<string, string> = Object.fromEntries(
  Object.entries(process.env).filter((entry): entry is [string, string] =>
    entry[1] !== undefined && !entry[0].startsWith('VITEST') && entry[0] !== 'NODE_OPTIONS' && entry[0] !== 'STOWAGE_SOCKET'),
);

export interface PackedPackage {
  /** Absolute path of the tarball. */
  tarball: string;
  /** The paths it holds, as npm lists them (`package/` left off). */
  files: string[];
}

/** Packs this tree into `dir`. */
export async function packPackage(dir: string): Promise<PackedPackage> {
  const packed = await execa('npm', ['pack', '--json', '--pack-destination', dir], { cwd: REPO, env: npmEnv, extendEnv: false });
  const [{ filename, files }] = JSON.parse(packed.stdout) as [{ filename: string; files: { path: string }[] }];
  return { tarball: join(dir, filename), files: files.map((f) => f.path).sort() };
}
