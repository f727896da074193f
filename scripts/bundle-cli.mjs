// Bundles the CLI and daemon: loading ~600 small modules (inversify, express, commander, ...) was
// most of the daemon's start-up time and a good part of its memory. Code loaded only on demand
// (the control API's express, the S3 SDK, prom-client, execa) goes to chunks of its own beside
// the entry, so that a daemon that never needs it neither parses nor keeps it: one file for
// everything cost 17 MB of RSS and 120 ms of CPU at every start.
// The library entry points (dist/src) stay unbundled for embedders.
import { chmod, rm } from 'node:fs/promises';
import { build } from 'esbuild';

const outdir = 'dist/bin';
// Chunk names carry a hash: a previous build's would stay behind.
await rm(outdir, { recursive: true, force: true });
await build({
  entryPoints: { stowage: 'dist/src/drivers/cli/main.js' },
  outdir,
  outExtension: { '.js': '.mjs' },
  bundle: true,
  splitting: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  logLevel: 'warning',
  // Bundled CommonJS dependencies (express) still call require().
  banner: { js: "import { createRequire as __stowageRequire } from 'node:module'; const require = __stowageRequire(import.meta.url);" },
});
await chmod(`${outdir}/stowage.mjs`, 0o755);
