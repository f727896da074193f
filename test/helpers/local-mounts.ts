import type { LocalMounts } from '../../src/core/cluster/cluster.js';

/** LocalMounts over a plain record of counts per mount ID per volume, read live: a test changes the record, the cluster sees it. */
export function mountsFromRecord(record: Record<string, Record<string, number>>): LocalMounts {
  return {
    mountedVolumes: () => Object.keys(record),
    count: (volume) => Object.values(record[volume] ?? {}).reduce((a, b) => a + b, 0),
  };
}
