/**
 * Mounts a test left under a docker node's directory in the host namespace. Mounts inside the
 * node's own namespace die with it; these would not, and deleting through one would destroy
 * someone else's data.
 */
import { execa } from 'execa';
import { readFile } from 'node:fs/promises';

/** Mount points at or under `dir` in this (the host's) namespace, deepest first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  const points = mountinfo
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((point): point is string => point !== undefined)
    .map((point) => point.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8))))
    .filter((point) => point === dir || point.startsWith(`${dir}/`));
  return points.sort((a, b) => b.length - a.length);
}

/** Unmounts what is mounted under `dir` (lazily if it must); returns what is still mounted. */
export async function unmountUnder(dir: string): Promise<string[]> {
  for (const point of await mountsUnder(dir)) {
    const plain = await execa('umount', [point], { reject: false, timeout: 30_000 });
    if (plain.exitCode !== 0) await execa('umount', ['-l', point], { reject: false, timeout: 30_000 });
  }
  return mountsUnder(dir);
}
