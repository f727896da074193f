/**
 * Turns the client log of a failed `mount -t glusterfs` into one actionable sentence. mount
 * itself only says "Mount failed. Check the log file"; the reason is in the log, in messages
 * that mean nothing to a Docker user. Patterns come from gluster 10.3 client logs
 * (test/fixtures/gluster/mount-log-*.txt).
 */
export function explainMountLog(log: string, volume: string, servers: readonly string[]): string | undefined {
  const serverList = servers.join(', ');
  const subdir = /subdirectory for mount "([^"]+)" is not found/.exec(log);
  if (subdir) return `directory ${subdir[1]} does not exist in gluster volume ${volume}`;
  if (/failed to fetch volume file|failed to get the 'volume file'/.test(log)) {
    return `gluster volume ${volume} does not exist on ${serverList} (gluster volume list)`;
  }
  const dns = /DNS resolution failed on host (\S+)/.exec(log);
  if (dns) return `the gluster server name ${dns[1]} does not resolve; fix glusterfs.servers or DNS`;
  // The client reached glusterd but none of the bricks: stopped volume, dead brick processes
  // or brick ports blocked (the first lookup fails when no brick answers).
  if (/failed to get the port number for remote subvolume|All subvolumes are down|first lookup on root failed/.test(log)) {
    return `the bricks of gluster volume ${volume} are not running; is the volume started? ` +
      `(gluster volume status ${volume}; gluster volume start ${volume})`;
  }
  if (/Exhausted all volfile servers|Connection refused|connection to .* failed/.test(log)) {
    return `glusterd on ${serverList} did not answer (port 24007); is glusterd running there and reachable from this node?`;
  }
  const lastError = log.split('\n').filter((line) => / E \[/.test(line)).pop();
  // Drop gluster's timestamp, level and source location; keep the message.
  return lastError?.replace(/^\[[^\]]*\]\s+E\s+(\[[^\]]*\]\s+)*/, '').trim() || undefined;
}
