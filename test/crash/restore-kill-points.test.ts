/**
 * kill -9 of the daemon right before every durable step of a restore (`Create` with `backup=URL`,
 * as `docker volume create -o backup=URL` sends it), a restart on the same root and store, and
 * then: a volume of that name is either absent, and a new restore of the name works, or there and
 * whole (every file, mode and link of the backup). A volume that is there and empty or partial is
 * the failure this suite is for: a user mounts it and sees a restore that "worked" with no data.
 *
 * The points come from a trace of one uninterrupted restore (see crash-daemon.ts): one before each
 * durable call it made, counted per system call, so a new step in the restore is swept too.
 */
import { createHash } from 'node:crypto';
import { lstat, mkdir, readdir, readFile, readlink, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../src/backup-targets/vfs/vfs-blob-store.js';
import { formatBackupUrl } from '../../src/core/backup/backup-url.js';
import { Repository, backupTree } from '../../src/core/backup/index.js';
import { assertCliBuilt } from '../helpers/daemon-process.js';
import { listedNames, type PluginReply } from '../helpers/plugin-client.js';
import { systemSuite } from '../helpers/requirements.js';
import { checkCrashTools, describePoint, killHard, traceDurableCalls, type KillPoint } from './crash-daemon.js';
import { CrashRig } from './crash-rig.js';

const skip = systemSuite('strace', checkCrashTools());

/** Every entry under `dir` as one line: type, mode, size and content digest or link target. */
async function treeText(dir: string, prefix = ''): Promise<string[]> {
  const lines: string[] = [];
  for (const name of (await readdir(dir)).sort()) {
    const path = join(dir, name);
    const stat = await lstat(path);
    const mode = (stat.mode & 0o7777).toString(8);
    if (stat.isDirectory()) {
      lines.push(`d ${prefix}${name} ${mode}`, ...await treeText(path, `${prefix}${name}/`));
    } else if (stat.isSymbolicLink()) {
      lines.push(`l ${prefix}${name} -> ${await readlink(path)}`);
    } else {
      const digest = createHash('sha256').update(await readFile(path)).digest('hex').slice(0, 16);
      lines.push(`f ${prefix}${name} ${mode} ${stat.size} ${digest}`);
    }
  }
  return lines;
}

/**
 * One point right before each durable call: `rename` #2 is the second rename. strace counts a
 * kill point's calls per thread, and a restore makes durable calls on two (the main thread's
 * synchronous calls on local files, the thread pool's): a point kills before the first call, on
 * either, that is that thread's nth of its kind. A call whose count another thread reached
 * earlier is no point of its own; `shadowed` counts those.
 */
function pointsBefore(calls: readonly string[], threads: readonly number[]): { points: KillPoint[]; shadowed: number } {
  const perThread = new Map<string, number>();
  const seen = new Set<string>();
  const points: KillPoint[] = [];
  calls.forEach((syscall, i) => {
    const counter = `${threads[i]}:${syscall}`;
    const n = (perThread.get(counter) ?? 0) + 1;
    perThread.set(counter, n);
    if (seen.has(`${syscall}#${n}`)) return;
    seen.add(`${syscall}#${n}`);
    points.push({ syscall, n });
  });
  return { points, shadowed: calls.length - points.length };
}

describe.skipIf(skip)('kill -9 between every two durable steps of a restore, then restart', { timeout: 600_000 }, () => {
  let rig: CrashRig | undefined;

  beforeAll(() => assertCliBuilt());
  afterEach(async () => {
    await rig?.dispose();
    rig = undefined;
  });

  it('leaves the volume whole or absent, never partial, and the name restorable', async () => {
    const r = rig = await CrashRig.create('restore');
    // The backup: a directory, files of several sizes and modes, a symlink.
    const source = join(r.dir, 'source');
    await mkdir(join(source, 'sub'), { recursive: true });
    await writeFile(join(source, 'sub', 'small'), 'data of the backup\n', { mode: 0o640 });
    await writeFile(join(source, 'large'), Buffer.alloc(300 * 1024, 'restored bytes '), { mode: 0o600 });
    await symlink('large', join(source, 'link'));
    const repoDir = join(r.dir, 'repo');
    const repo = await Repository.init(new VfsBlobStore(repoDir));
    const record = await backupTree(source, repo, { volume: 'source' });
    const url = formatBackupUrl({ target: { scheme: 'vfs', path: repoDir }, volume: 'source', backup: record.id });
    const expected = await treeText(source);
    await r.start();

    const restore = (name: string) => r.call('Create', { Name: name, Opts: { backup: url } });
    /** A restored volume's tree, read through a mount as a container would; undefined when it does not mount. */
    const contentOf = async (point: string, name: string): Promise<string[] | undefined> => {
      const mounted = await r.expectOk(point, 'a listed volume mounts', 'Mount', { Name: name, ID: 'check' });
      if (!mounted) return undefined;
      try {
        return await treeText(String(mounted.Mountpoint));
      } finally {
        await r.expectOk(point, 'unmount succeeds', 'Unmount', { Name: name, ID: 'check' });
      }
    };
    const checkWhole = async (point: string, name: string, why: string) => {
      const got = await contentOf(point, name);
      if (got && got.join('\n') !== expected.join('\n')) {
        r.violate(point, why, `${name} holds ${JSON.stringify(got)}, the backup ${JSON.stringify(expected)}`);
      }
    };

    // The first restore makes directories (markers, claims, the repository's locks) that later
    // ones find, and a daemon's first restore does what later ones need not: the trace is of a
    // second restore, the first in a restarted daemon, as every swept restore is.
    const first = await restore('first');
    if (first.Err) throw new Error(`the first restore failed: ${JSON.stringify(first.Err)}`);
    await killHard(r.run);
    await r.start();
    const trace = await traceDurableCalls(r.run, () => restore('traced'));
    if ((trace.value as PluginReply | undefined)?.Err || trace.error) {
      throw new Error(`the uninterrupted restore failed: ${JSON.stringify(trace.value ?? trace.error?.message)}`);
    }
    await checkWhole('traced', 'traced', 'an uninterrupted restore is whole');
    const { points, shadowed } = pointsBefore(trace.calls, trace.threads);
    expect(points.length).toBeGreaterThan(10);

    let n = 0;
    for (const point of points) {
      const name = `v${++n}`;
      const outcome = await r.crashAt(point, () => restore(name));
      if (!outcome) break; // the daemon did not come back; recorded as a violation
      const label = describePoint(point);
      if (!outcome.killed) r.violate(label, 'every kill point is reached', `the restore never made call ${label}: its steps vary from run to run`);
      await r.checkStore(label);
      const answered = outcome.value !== undefined && !outcome.value.Err;
      if ((await listedNames(r.socket)).includes(name)) {
        await checkWhole(label, name, 'a restored volume that is listed is whole');
      } else {
        if (answered) r.violate(label, 'a restore that answered stays', `${name} is gone after the restart`);
        const again = await r.expectOk(label, 'the name of a crashed restore can be restored again', 'Create', { Name: name, Opts: { backup: url } });
        if (again) await checkWhole(label, name, 'a restore after a crashed one is whole');
      }
    }
    process.stderr.write(`\n[crash restore] kill points: ${r.visited.join(', ')} (${shadowed} of ${trace.calls.length} calls shadowed)\n` +
      (r.violations.length === 0 ? '  no invariant broke\n' : r.report().map((line) => `  ${line}\n`).join('')));
    expect(r.report()).toEqual([]);
  });
});
