/**
 * The managed (v2) plugin on a private docker node: the registry-free build (scripts/build-plugin.mjs),
 * and the plugin's process as containerd sees it (the engine names no pid for plugins).
 */
import { execa } from 'execa';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sleep } from './child-process-stop.js';
import type { DockerNode } from './docker-node.js';

const repo = resolve(fileURLToPath(new URL('../..', import.meta.url)));

export interface PluginBuild {
  dir: string;
  ms: number;
  /** The script's summary line (build time, rootfs size, tools left out). */
  summary: string;
}

/** Builds config.json + rootfs/ under `dir` from this host's binaries, without creating a plugin. */
export async function buildPluginDir(dir: string): Promise<PluginBuild> {
  const t0 = Date.now();
  const result = await execa(process.execPath, [join(repo, 'scripts/build-plugin.mjs'), '--build-only', '--out', dir], {
    timeout: 300_000,
    reject: false,
  });
  if (result.exitCode !== 0) throw new Error(`building the plugin failed: ${result.stderr || result.stdout}`);
  return { dir, ms: Date.now() - t0, summary: result.stdout.trim() };
}

export interface PluginTask {
  pid: number;
  status: string;
}

/** The plugin's task in the node's containerd (namespace plugins.moby), or undefined while it has none. */
export async function pluginTask(node: DockerNode, pluginId: string): Promise<PluginTask | undefined> {
  const result = await execa('ctr', ['-a', join(node.dir, 'exec/containerd/containerd.sock'), '-n', 'plugins.moby', 'task', 'ls'], {
    reject: false,
    timeout: 10_000,
  });
  for (const line of result.stdout.split('\n')) {
    const [id, pid, status] = line.trim().split(/\s+/);
    if (id === pluginId && pid !== undefined && status !== undefined) return { pid: Number(pid), status };
  }
  return undefined;
}

/** Waits until the plugin runs as a process other than `not` and the engine reaches it again. */
export async function waitForPluginProcess(node: DockerNode, pluginId: string, not: number, timeoutMs = 60_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const task = await pluginTask(node, pluginId);
    if (task !== undefined && task.pid !== not && task.status === 'RUNNING') {
      const probe = await node.docker(['volume', 'ls', '-q'], { reject: false, timeoutMs: 20_000 });
      if (probe.exitCode === 0 && !/stowage/i.test(probe.stderr)) return task.pid;
    }
    await sleep(200);
  }
  throw new Error(`plugin ${pluginId} did not come back as a new process within ${timeoutMs} ms`);
}

/** Waits until containerd holds no task of the plugin: an enable before that fails with "id already in use". */
export async function waitForNoPluginTask(node: DockerNode, pluginId: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if ((await pluginTask(node, pluginId)) === undefined) return;
    await sleep(200);
  }
  throw new Error(`plugin ${pluginId} still has a containerd task after ${timeoutMs} ms`);
}

/**
 * `docker plugin enable`, allowing for what docker 20.10 does after a plugin that failed to
 * start: until it has cleaned up, an enable fails with "id already in use" (its containerd
 * container is still there), sometimes while starting the plugin anyway, so that the next
 * enable says "already enabled".
 */
export async function enablePlugin(node: DockerNode, plugin: string): Promise<void> {
  let last = '';
  for (let attempt = 0; attempt < 4; attempt++) {
    const result = await node.docker(['plugin', 'enable', plugin], { reject: false, timeoutMs: 120_000 });
    if (result.exitCode === 0 || /already enabled/.test(result.stderr)) return;
    last = result.stderr.trim();
    if (!/id already in use|file exists/.test(last)) break;
    await sleep(1_000);
  }
  throw new Error(`docker plugin enable ${plugin} failed: ${last}`);
}

/**
 * For afterAll: removes the node's containers while the plugin can still answer their Unmounts,
 * then disables the plugin and kills its process if the disable left it. The plugin runs in a
 * mount namespace of its own, which the node's final sweep does not reach. Never throws.
 */
export async function stopPlugin(node: DockerNode, plugin: string): Promise<void> {
  const pluginId = (await node.docker(['plugin', 'inspect', plugin, '--format', '{{.Id}}'], { reject: false })).stdout.trim();
  if (pluginId === '') return;
  const task = await pluginTask(node, pluginId).catch(() => undefined);
  const containers = (await node.docker(['ps', '-aq'], { reject: false })).stdout.split('\n').filter(Boolean);
  if (containers.length > 0) await node.docker(['rm', '-f', ...containers], { reject: false, timeoutMs: 120_000 });
  await node.docker(['plugin', 'disable', '-f', plugin], { reject: false, timeoutMs: 120_000 });
  if (task !== undefined) {
    try {
      process.kill(task.pid, 'SIGKILL');
    } catch {
      // gone with the disable
    }
  }
}

/** The lines the engine logged for the plugin's output (`plugin=<ID>`), for failure messages. */
export async function pluginLog(node: DockerNode, pluginId: string): Promise<string> {
  const log = await readFile(join(node.dir, 'dockerd.log'), 'utf8').catch(() => '');
  return log.split('\n').filter((line) => line.includes(`plugin=${pluginId}`)).join('\n');
}
