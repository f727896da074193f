import { join } from 'node:path';
import { parseDevicemapperOptions, type DevicemapperOptions } from '../../../backends/devicemapper/index.js';
import { layout, type GlusterfsOptions } from '../../../backends/glusterfs/glusterfs-options.js';
import { parseGlusterfsOptions } from '../../../backends/glusterfs/index.js';
import { META_DIR, storeLayout } from '../../../backends/vfs/store-layout.js';
import { parseVfsOptions } from '../../../backends/vfs/vfs-options.js';
import { messageOf } from '../../../core/errors.js';
import type { DaemonSettings } from '../daemon.js';

/** Where the set-up keeps things, from the daemon's settings alone (nothing is touched). */
export type StorePlan =
  | { backend: 'vfs'; storePath: string; clusterDir: string; shared: boolean | 'auto' }
  | { backend: 'glusterfs'; storePath: string; clusterDir: string; options: GlusterfsOptions }
  | { backend: 'devicemapper'; options: DevicemapperOptions }
  | { backend: 'invalid'; problem: string };

export function storePlanOf(settings: DaemonSettings): StorePlan {
  try {
    switch (settings.backend) {
      case 'vfs': {
        const options = parseVfsOptions(settings.backendOptions, settings.root);
        return { backend: 'vfs', storePath: options.path, clusterDir: storeLayout(options.path).cluster, shared: options.shared };
      }
      case 'glusterfs': {
        const options = parseGlusterfsOptions(settings.backendOptions);
        // Both modes keep the cluster state in the pool, mounted under --root.
        const storePath = join(layout(settings.root).mounts, options.pool);
        return { backend: 'glusterfs', storePath, clusterDir: join(storePath, META_DIR, 'cluster'), options };
      }
      case 'devicemapper':
        return { backend: 'devicemapper', options: parseDevicemapperOptions(settings.backendOptions) };
      default:
        return { backend: 'invalid', problem: `unknown backend ${JSON.stringify(settings.backend)}; use vfs, glusterfs or devicemapper` };
    }
  } catch (err) {
    return { backend: 'invalid', problem: messageOf(err) };
  }
}
