import { join } from 'node:path';
import { ErrorCodes, StowageError } from '../../core/errors.js';
import type { BrickRoot } from './glusterfs-options.js';

/** glusterd keeps a volume name in NAME_MAX + 1 bytes with its NUL (glusterd-store.c), so at most 255 characters. */
const GLUSTER_NAME_MAX = 255;
/**
 * glusterd names a brick's volume file `<volume>.<host>.<brick path without its first '/', each
 * '/' as '-'>.vol`. Its tightest limit on that name (gluster 10.3, measured): with quota on (a
 * size), the quota daemon's client fetches `client_per_brick/<volume>.client.<host>.<brick>.vol`
 * as a volume id, which glusterd refuses ("volume name too long", __server_getspec in
 * glusterd-handshake.c) unless it fits its NAME_MAX-sized volume name; past it the limit is
 * set but never enforced. Looser ones: the file written as `<name>.tmp` must fit NAME_MAX (else
 * "Failed to create volume files"), and glusterd_is_valid_volfpath checks `/<name>` < 256.
 * So the plain name may have at most 254 - 17 - 7 = 230 characters. The volume name is in it
 * twice (once in the brick directory), so the brick roots' host names and paths set the limit.
 */
const VOLFILE_NAME_MAX = 254 - 'client_per_brick/'.length - '.client'.length;
/** What planBricks appends to the gluster name in a brick directory: `-<YYYYMMDDTHHMMSSZ>-<6 hex>`. */
const BRICK_SUFFIX = '-00000000T000000Z-000000';

function volfileNameLength(gluster: string, root: BrickRoot): number {
  const brick = join(root.path, `${gluster}${BRICK_SUFFIX}`);
  return gluster.length + 1 + root.host.length + 1 + (brick.length - 1) + '.vol'.length;
}

/** The longest gluster volume name glusterd accepts with bricks in `roots`. */
export function longestGlusterName(roots: readonly BrickRoot[]): number {
  let n = GLUSTER_NAME_MAX;
  while (n > 0 && roots.some((root) => volfileNameLength('x'.repeat(n), root) > VOLFILE_NAME_MAX)) n -= 1;
  return n;
}

/** Refuses, before anything is made, a name whose gluster volume glusterd would refuse with bricks in `roots`. */
export function assertGlusterNameFits(name: string, gluster: string, prefix: string, roots: readonly BrickRoot[]): void {
  const longest = longestGlusterName(roots);
  if (gluster.length <= longest) return;
  throw new StowageError(ErrorCodes.INVALID_NAME,
    `volume name ${name} is too long for a gluster volume with these brick roots: its gluster volume ${gluster.slice(0, 40)}... ` +
    `would have ${gluster.length} characters, and gluster accepts at most ${longest} here (its volume file for a brick is ` +
    `named <volume>.<host>.<brick path>.vol, and with quota its client_per_brick/<volume>.client.<host>.<brick path>.vol must fit in 255 characters; the prefix ${prefix} counts, '_' and '.' ` +
    'count twice); choose a shorter name', { volume: name });
}

/**
 * Gluster volume name of a stowage volume in volume mode. Docker names may contain '.', which
 * gluster refuses, so the mapping escapes: '_' becomes '__' and '.' becomes '_d'. The mapping
 * is one-to-one, so two stowage names never share a gluster volume and gluster's own "already
 * exists" check is the cluster-wide lock on a name.
 */
export function glusterNameOf(prefix: string, name: string): string {
  const gluster = prefix + name.replace(/_/g, '__').replace(/\./g, '_d');
  if (gluster.length > GLUSTER_NAME_MAX) {
    throw new StowageError(ErrorCodes.INVALID_NAME,
      `volume name ${name} is too long for a gluster volume (${gluster} has ${gluster.length} characters, gluster allows ` +
      `${GLUSTER_NAME_MAX}; '_' and '.' count twice); choose a shorter name`, { volume: name });
  }
  return gluster;
}

/** The stowage name of a gluster volume made by `glusterNameOf`, or undefined for any other volume. */
export function stowageNameOf(prefix: string, gluster: string): string | undefined {
  if (!gluster.startsWith(prefix)) return undefined;
  const escaped = gluster.slice(prefix.length);
  let name = '';
  for (let i = 0; i < escaped.length; i += 1) {
    const char = escaped[i]!;
    if (char !== '_') {
      name += char;
      continue;
    }
    const next = escaped[i + 1];
    if (next === '_') name += '_';
    else if (next === 'd') name += '.';
    else return undefined;
    i += 1;
  }
  return name.length > 0 ? name : undefined;
}
