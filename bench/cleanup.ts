/** Everything the benchmark must undo on any exit path: daemons, Docker nodes, temp dirs. */
import { stopAll } from '../test/helpers/docker-node.js';
import { killAllDaemons, makeTempDir, removeTempDir } from '../test/helpers/daemon-process.js';
import { killRawDaemons } from './daemon.js';
import { errorMessage } from './util.js';

const tempDirs = new Set<string>();

/** A temp dir (short path, for unix sockets) removed by `cleanupAll` if its user does not. */
export async function benchTempDir(): Promise<string> {
  const dir = await makeTempDir('stowage-bench-');
  tempDirs.add(dir);
  return dir;
}

export async function removeBenchTempDir(dir: string): Promise<void> {
  await removeTempDir(dir);
  tempDirs.delete(dir);
}

/** Kills daemons, stops Docker nodes, removes temp dirs; reports problems instead of throwing. */
export async function cleanupAll(): Promise<void> {
  const steps: Array<[string, () => Promise<void>]> = [
    ['killing raw daemons', killRawDaemons],
    ['killing helper daemons', killAllDaemons],
    ['stopping docker nodes', stopAll],
    ['removing temp dirs', async () => { for (const dir of [...tempDirs]) await removeBenchTempDir(dir); }],
  ];
  for (const [what, step] of steps) {
    try {
      await step();
    } catch (error) {
      process.stderr.write(`bench cleanup: ${what} failed: ${errorMessage(error)}\n`);
    }
  }
}
