// Bundles the CLI and daemon into one file: loading ~600 small modules (inversify, express,
// commander, ...) was most of the daemon's start-up time and a good part of its memory.
// The library entry points (dist/src) stay unbundled for embedders.
import { chmod } from 'node:fs/promises';
import { build } from 'esbuild';

const outfile = 'dist/bin/stowage.mjs';
await build({
  entryPoints: ['dist/src/drivers/cli/main.js'],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  logLevel: 'warning',
  // Bundled CommonJS dependencies (express) still call require().
  banner: { js: "import { createRequire as __stowageRequire } from 'node:module'; const require = __stowageRequire(import.meta.url);" },
});
await chmod(outfile, 0o755);
