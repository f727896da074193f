/**
 * Each capability is stated once and the core reads it there: cluster protection from
 * `capabilities.clusterStateDir` (whatever the scope), snapshots from the `snapshots` member.
 */
import { describe, expect, it } from 'vitest';
import { buildContainer } from '../../src/container.js';
import type { Backend, BackendCapabilities } from '../../src/core/backend.js';
import { LocalCluster } from '../../src/core/cluster/cluster.js';
import { SharedCluster } from '../../src/core/cluster/shared-cluster.js';
import { ExecaCommandRunner } from '../../src/core/command-runner.js';
import { silentLogger } from '../../src/core/logger.js';
import { TOKENS } from '../../src/core/tokens.js';
import { VfsBackend } from '../../src/backends/vfs/vfs-backend.js';
import { memFs } from '../helpers/memfs-stack.js';
import { RecordingBackend } from '../helpers/recording-backend.js';

/** A vfs backend on memfs that declares the given capabilities instead of its own. */
class Declaring extends RecordingBackend {
  constructor(private readonly declared: BackendCapabilities) {
    super(new VfsBackend({ nodeId: 'n', root: '/state', fs: memFs(), runner: new ExecaCommandRunner(), log: silentLogger },
      { path: '/state/volumes', shared: false }));
  }
  override get capabilities() { return this.declared; }
}

const clusterOf = (backend: Backend) => buildContainer({
  backend, backendOptions: {}, root: '/state', nodeId: 'n', onRemove: 'delete', fs: memFs(), logger: silentLogger,
}).get(TOKENS.Cluster);

// The typecheck of the tests (part of `npm test`) fails if the union stops refusing this.
// @ts-expect-error: a `global` scope requires a `clusterStateDir`.
export const undeclaredClusterDir: BackendCapabilities = { scope: 'global', sizeLimit: 'recorded' };

describe('capabilities the core reads', () => {
  it('runs cluster protection exactly when the capabilities name a cluster state directory', () => {
    expect(clusterOf(new Declaring({ scope: 'local', sizeLimit: 'recorded' }))).toBeInstanceOf(LocalCluster);
    expect(clusterOf(new Declaring({ scope: 'local', clusterStateDir: '/shared/cluster', sizeLimit: 'recorded' }))).toBeInstanceOf(SharedCluster);
    expect(clusterOf(new Declaring({ scope: 'global', clusterStateDir: '/shared/cluster', sizeLimit: 'recorded' }))).toBeInstanceOf(SharedCluster);
  });
});
