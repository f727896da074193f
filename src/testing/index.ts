/**
 * `stowage/testing`: the conformance suites every stowage backend passes, for vitest. A project
 * with its own Backend calls them from a test file; vitest is a peer dependency of this entry.
 */
export { describeBackendConformance } from './backend-suite.js';
export { describeSnapshotConformance } from './snapshot-suite.js';
export { describeSharedStoreConformance } from './shared-store-suite.js';
export type { ConformanceHarness, SharedStoreHarness } from './harness.js';
export { describeBlobStoreConformance } from './blob-store-suite.js';
export type { BlobStoreHarness } from './blob-store-suite.js';
export { describeBackupConformance, type BackupConformanceHarness } from './backup-suite.js';
