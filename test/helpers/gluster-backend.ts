/**
 * Builds glusterfs backends against the test harness's private glusterd, and cleans up what
 * they made (mounts under their roots, gluster volumes).
 */
import * as realFs from 'node:fs/promises';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { ExecaCommandRunner, type CommandRunner } from '../../src/core/command-runner.js';
import type { Logger } from '../../src/core/logger.js';
import { createGlusterfsBackend } from '../../src/backends/glusterfs/index.js';
import type { GlusterSubdirBackend } from '../../src/backends/glusterfs/subdir-backend.js';
import type { GlusterVolumeBackend } from '../../src/backends/glusterfs/volume-backend.js';
import { parseReply, parseVolumeInfo } from '../../src/backends/glusterfs/parsers.js';
import type { Glusterd } from './glusterd.js';

export type GlusterBackend = GlusterSubdirBackend | GlusterVolumeBackend;

import { memoryLogger } from './memory-logger.js';

export { memoryLogger };

export function glusterBackend(
  gd: Glusterd, root: string, options: Record<string, string>, nodeId = 'node-a', log = memoryLogger(),
  runner: CommandRunner = new ExecaCommandRunner(),
): GlusterBackend {
  return createGlusterfsBackend(
    { nodeId, root, fs: realFs, runner, log },
    { 'glusterfs.servers': gd.host, 'glusterfs.glusterdsocket': gd.socket, ...options },
  );
}

/** Mount points under `dir` (host namespace), deepest first. */
export async function glusterMountsUnder(dir: string): Promise<string[]> {
  const text = await readFile('/proc/self/mounts', 'utf8');
  return text.split('\n').map((line) => line.split(' '))
    .filter((f) => f[2] === 'fuse.glusterfs' && f[1] !== undefined && (f[1] === dir || f[1].startsWith(`${dir}/`)))
    .map((f) => f[1]!).sort((a, b) => b.length - a.length);
}

export async function unmountUnder(dir: string): Promise<void> {
  for (const point of await glusterMountsUnder(dir)) {
    const plain = await execa('umount', [point], { reject: false, timeout: 20_000 });
    if (plain.exitCode !== 0) await execa('umount', ['-l', point], { reject: false, timeout: 20_000 });
  }
}

/** Stops (force) and deletes gluster volumes whose names start with `prefix`. */
export async function deleteVolumes(gd: Glusterd, prefix: string): Promise<void> {
  const list = await gd.gluster(['--xml', 'volume', 'list']);
  const names = [...list.stdout.matchAll(/<volume>([^<]+)<\/volume>/g)].map((m) => m[1]!).filter((n) => n.startsWith(prefix));
  await Promise.all(names.map(async (name) => {
    await gd.gluster(['volume', 'stop', name, 'force']);
    await gd.gluster(['volume', 'delete', name]);
  }));
}

/** Polls `check` until it returns true or `ms` pass; returns the last result. */
export async function eventually(check: () => Promise<boolean>, ms = 15_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Pid of the gluster FUSE client serving `target` (its last argument), if any. */
export async function clientPidOf(target: string): Promise<number | undefined> {
  for (const pid of (await readdir('/proc')).filter((e) => /^\d+$/.test(e))) {
    const args = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0').filter(Boolean);
    if (/(^|\/)glusterfs$/.test(args[0] ?? '') && args[args.length - 1] === target) return Number(pid);
  }
  return undefined;
}

/** The XML `gluster volume quota VOL list PATH` hard limit, or undefined. */
export async function hardLimitOf(gd: Glusterd, volume: string, path: string): Promise<number | undefined> {
  const out = (await gd.gluster(['--xml', 'volume', 'quota', volume, 'list', path])).stdout;
  const limit = /<hard_limit>(\d+)<\/hard_limit>/.exec(out);
  return limit ? Number(limit[1]) : undefined;
}

/**
 * The size gluster reports for `dir` of `volume` through a fresh client of our own: with a
 * directory quota (and quota-deem-statfs, on by default) that is the hard limit. Unlike
 * `quota list`, this does not depend on which mount namespace asked gluster first.
 */
export async function statfsSizeOf(gd: Glusterd, volume: string, dir: string): Promise<number> {
  const target = await gd.tempDir('statfs-');
  await execa('mount', ['-t', 'glusterfs', `${gd.host}:/${volume}`, target], { timeout: 30_000 });
  try {
    const fs = await realFs.statfs(`${target}${dir}`);
    return fs.blocks * fs.bsize;
  } finally {
    await execa('umount', [target], { timeout: 30_000 });
  }
}

/**
 * Writes `mib` files of 1 MiB into `dir` with dd (each flushed with fsync, as a database
 * would), stopping at the first refusal; returns the bytes that landed (a refused file may
 * keep part of its MiB) and dd's complaint. This is how a container meets a quota.
 */
export async function fillUntilRefused(dir: string, mib: number): Promise<{ bytes: number; refusal?: string }> {
  let refusal: string | undefined;
  for (let i = 0; i < mib && refusal === undefined; i += 1) {
    const dd = await execa('dd', ['if=/dev/zero', `of=${dir}/fill-${i}`, 'bs=1M', 'count=1', 'conv=fsync', 'status=none'],
      { reject: false, timeout: 60_000 });
    if (dd.exitCode !== 0) refusal = String(dd.stderr).trim() || `dd exited ${dd.exitCode}`;
  }
  let bytes = 0;
  for (const entry of await readdir(dir)) bytes += (await realFs.stat(`${dir}/${entry}`)).size;
  return { bytes, refusal };
}

/** The quota timeouts set on `volume` (`features.soft-timeout`, `features.hard-timeout`), as glusterd stores them. */
export async function quotaTimeoutsOf(gd: Glusterd, volume: string): Promise<{ soft?: string; hard?: string }> {
  const [info] = parseVolumeInfo(parseReply(await gd.xml(['volume', 'info', volume])).root);
  return { soft: info?.options['features.soft-timeout'], hard: info?.options['features.hard-timeout'] };
}

/**
 * What gluster knows of a limit that let writes through: its `quota list` line, and the warnings
 * and errors its brick and quotad logs wrote since `since` (gluster's log timestamps are UTC).
 */
export async function quotaDiagnostics(gd: Glusterd, volume: string, path: string, since: Date): Promise<string> {
  const list = await gd.gluster(['volume', 'quota', volume, 'list', path]);
  const stamp = since.toISOString().replace('T', ' ').slice(0, 19);
  const logs = [join(gd.logDir, 'quotad.log'),
    ...(await readdir(join(gd.logDir, 'bricks')).catch(() => [] as string[])).map((f) => join(gd.logDir, 'bricks', f))];
  const lines: string[] = [];
  for (const log of logs) {
    for (const line of (await readFile(log, 'utf8').catch(() => '')).split('\n')) {
      const at = /^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)/.exec(line)?.[1];
      if (at !== undefined && at >= stamp && / [WEC] \[/.test(line)) lines.push(`${log.split('/').pop()}: ${line.slice(0, 300)}`);
    }
  }
  return [`quota list ${path}: ${(list.stdout + list.stderr).trim()}`, ...lines.slice(-40)].join('\n');
}
