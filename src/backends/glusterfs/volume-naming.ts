import { ErrorCodes, StowageError } from '../../core/errors.js';

/** gluster refuses longer volume names. */
const GLUSTER_NAME_MAX = 256;

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
