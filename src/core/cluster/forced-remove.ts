import { ErrorCodes, StowageError } from '../errors.js';
import type { NodeView } from './node-record.js';

/**
 * What a forced remove still respects: the volume mounted on a node whose daemon is alive. Force
 * exists for references nobody can clear (a node that stopped sending heartbeats, an engine
 * that never answered, containers that do not run); a mount on a live node is a container that
 * may be writing right now, and this node's own mounts are never overridden either. So the
 * same remove is refused alike on the node that mounts the volume and on every other node.
 * `heartbeat` says how recent a node's record is, for the message.
 */
export function assertNoLiveMount(name: string, others: NodeView[], heartbeat: (node: NodeView) => string): void {
  // A live node whose markers cannot be read may mount anything: it counts as mounting this volume.
  const mounted = others.filter((node) => !node.stale && (node.mounted.includes(name) || node.markersUnreadable !== undefined));
  if (mounted.length === 0) return;
  const which = (node: NodeView) => `${node.record.nodeId} (${heartbeat(node)}${node.markersUnreadable !== undefined ? `; its mounts cannot be read: ${node.markersUnreadable}` : ''})`;
  throw new StowageError(ErrorCodes.VOLUME_IN_USE,
    `volume ${name} is mounted on ${mounted.map(which).join(', ')}, ` +
    'whose daemon is alive: a forced remove overrides references from nodes that stopped sending heartbeats, from engines that ' +
    'never answered and from containers that do not run, never a mount in use. Stop what uses it there (a running container; ' +
    'a mount by hand on that node), then remove the volume again', { volume: name });
}
