import { spawn } from 'node:child_process';

/** A child process swapping directories for symlinks and back; `done` resolves with its exit code. */
export interface SymlinkSwapper {
  done: Promise<number | null>;
  /** True until the child has exited. */
  running(): boolean;
}

/**
 * Starts a separate process that, for `ms`, renames each directory of `dirs` aside, puts a
 * symlink to `link` in its place, and puts it back, over and over: another machine replacing a
 * store's directory while the daemon works in it. A process of its own, so the swaps land
 * between any two system calls of the code under test, not only where it awaits.
 */
export function swapForSymlinks(dirs: readonly string[], link: string, ms = 1500): SymlinkSwapper {
  const child = spawn(process.execPath, ['-e', `
    const fs = require('node:fs');
    const [ms, link, ...dirs] = process.argv.slice(1);
    const end = Date.now() + Number(ms);
    while (Date.now() < end) for (const dir of dirs) {
      fs.renameSync(dir, dir + '.real'); fs.symlinkSync(link, dir);
      fs.unlinkSync(dir); fs.renameSync(dir + '.real', dir);
    }`, String(ms), link, ...dirs], { stdio: 'inherit' });
  let alive = true;
  const done = new Promise<number | null>((resolve) => child.on('exit', (code) => { alive = false; resolve(code); }));
  return { done, running: () => alive };
}
