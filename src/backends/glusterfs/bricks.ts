import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { ErrorCodes, StowageError } from '../../core/errors.js';
import { parseCount, type BrickRoot, type GlusterfsOptions } from './glusterfs-options.js';
import type { GlusterBrick, GlusterVolume } from './parsers.js';

/** Where deleted bricks wait for their background removal, inside each brick root. */
export const DELETING_DIR = '.stowage-deleting';

export interface VolumeLayout {
  kind: 'distribute' | 'replica' | 'disperse';
  count: number;
}

/** Layout of a new gluster volume: per-volume `replica`/`disperse` create options override the daemon's. */
export function layoutFor(options: GlusterfsOptions, perVolume: Record<string, string> = {}): VolumeLayout {
  const replica = perVolume.replica;
  const disperse = perVolume.disperse;
  if (replica !== undefined && disperse !== undefined) {
    throw new StowageError(ErrorCodes.INVALID_OPTION, 'options replica and disperse exclude each other; give one');
  }
  let layout: VolumeLayout = { kind: 'distribute', count: 1 };
  if (replica !== undefined) layout = { kind: 'replica', count: parseCount('replica', replica, 2) };
  else if (disperse !== undefined) layout = { kind: 'disperse', count: parseCount('disperse', disperse, 3) };
  else if (options.replica !== undefined) layout = { kind: 'replica', count: options.replica };
  else if (options.disperse !== undefined) layout = { kind: 'disperse', count: options.disperse };
  const bricks = options.brickRoots.length;
  if (bricks % layout.count !== 0) {
    throw new StowageError(ErrorCodes.INVALID_OPTION,
      `${layout.kind} ${layout.count} needs a multiple of ${layout.count} bricks, but glusterfs.bricks lists ${bricks} ` +
      'brick root(s); change the count or the brick roots');
  }
  return layout;
}

export function layoutArgs(layout: VolumeLayout): string[] {
  return layout.kind === 'distribute' ? [] : [layout.kind, String(layout.count)];
}

function stamp(): string {
  return new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z') + '-' + randomBytes(3).toString('hex');
}

/**
 * One brick per root, in a directory unique to this incarnation of the volume: gluster's delete
 * leaves bricks behind and `create ... force` would silently reuse an old brick with its data,
 * so a re-created volume must never land on an earlier brick.
 */
export function planBricks(roots: readonly BrickRoot[], glusterName: string): string[] {
  const suffix = stamp();
  return roots.map((root) => `${root.host}:${join(root.path, `${glusterName}-${suffix}`)}`);
}

/** `<gluster name>-<UTC stamp>-<6 hex>`: the only brick directory names `planBricks` makes. */
const STAMP = /-\d{8}T\d{6}Z-[0-9a-f]{6}$/;

/**
 * True only for a path `planBricks` could have made for `glusterName` directly under one of the
 * configured roots of `host`: the exact name (so a brick of `stowage-db-x` never passes for
 * `stowage-db`, nor an administrator's `stowage-db-1`). Paths come from gluster records and
 * tombstones other machines wrote, so they are checked rather than trusted.
 */
export function isOwnBrickPath(host: string, path: string, roots: readonly BrickRoot[], glusterName: string): boolean {
  const name = basename(path);
  return roots.some((root) => root.host === host && dirname(path) === root.path) &&
    name.startsWith(`${glusterName}-`) && STAMP.test(name) && name.slice(0, -STAMP.exec(name)![0].length) === glusterName &&
    !path.includes('/../') && !path.includes('/./');
}

export function isOwnBrick(brick: GlusterBrick, roots: readonly BrickRoot[], glusterName: string): boolean {
  return isOwnBrickPath(brick.host, brick.path, roots, glusterName);
}

/** An entry of `.stowage-deleting` named as stowage names bricks of volumes under `prefix`. */
export function isDeletingEntryName(entry: string, prefix: string): boolean {
  return entry.startsWith(prefix) && STAMP.test(entry) && /^[A-Za-z0-9_-]+$/.test(entry.replace(STAMP, ''));
}

export function deletingPathOf(brickPath: string): string {
  return join(dirname(brickPath), DELETING_DIR, basename(brickPath));
}

export function spec(brick: { host: string; path: string }): string {
  return `${brick.host}:${brick.path}`;
}

/**
 * Where a retained volume's data is: a local path only where one brick holds all of it (a
 * single brick, or a replica of a pure replicate volume); otherwise the files are spread (or
 * encoded) over every brick, so all are named.
 */
export function retainedLocation(volume: GlusterVolume, localPeer: string): string {
  const here = volume.bricks.find((b) => b.hostUuid === localPeer);
  const whole = volume.bricks.length === 1 || volume.type === 'Replicate';
  return here && whole ? here.path : volume.bricks.map(spec).join(',');
}
