/**
 * The do-nothing plugin (null-plugin.ts) in a process of its own, so section 2 can time it the
 * way it times stowage: `node --import tsx bench/null-plugin-process.ts DIR` serves
 * DIR/stowage-null.sock and prints "ready" once it listens.
 */
import { startNullPlugin } from './null-plugin.js';

const dir = process.argv[2];
if (!dir) throw new Error('usage: null-plugin-process.ts DIR');
await startNullPlugin(dir);
process.stdout.write('ready\n');
