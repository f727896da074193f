/**
 * stowage as a managed (v2) Docker plugin on a private engine: built registry-free from this
 * host's binaries, created with `docker plugin create`, enabled; then the ways an operator's
 * plugin is stopped (kill -9, engine restart, disable/set/enable, a state directory that comes
 * up empty) must leave volumes, data and running containers' mounts alone.
 *
 * The engine runs with --live-restore: without it an engine restart stops every container (and
 * the plugin), so "a running container keeps its mount" across an engine restart needs it. The
 * last test restarts it without, for the plain restart most engines get.
 */
import { mkdir, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDockerNode, stopAll, type DockerNode } from '../helpers/docker-node.js';
import {
  buildPluginDir, enablePlugin, pluginTask, stopPlugin, waitForNoPluginTask, waitForPluginProcess, type PluginBuild,
} from '../helpers/managed-plugin.js';
import { checkDocker, findExecutable, systemSuite, type ComponentCheck } from '../helpers/requirements.js';
import { DAEMON_ENVIRONMENT } from '../../src/drivers/cli/daemon-v8-flags.js';

function checkManagedPlugin(): ComponentCheck {
  const docker = checkDocker();
  if (!docker.ok) return docker;
  // containerd's CLI names the plugin's pid, which the engine does not.
  if (findExecutable('ctr') === undefined) return { ok: false, why: 'missing ctr (apt-get install -y containerd)' };
  return { ok: true };
}

const skip = systemSuite('docker (managed plugin)', checkManagedPlugin());

const PLUGIN = 'stowage';
const DRIVER = 'stowage:latest';

describe.skipIf(skip)('stowage as a managed (v2) Docker plugin', { timeout: 180_000 }, () => {
  let node: DockerNode;
  let build: PluginBuild;
  let pluginId: string;
  let stateDir: string;
  const docker = (args: string[]) => node.docker(args, { timeoutMs: 120_000 });
  const run = (args: string[]) => docker(['run', '--rm', '--network', 'none', ...args]);
  const volumes = async () => (await docker(['volume', 'ls', '--format', '{{.Driver}} {{.Name}}'])).stdout.split('\n').filter(Boolean);

  beforeAll(async () => {
    node = await startDockerNode({ name: 'plugin', daemonArgs: ['--live-restore'] });
    build = await buildPluginDir(join(node.dir, 'plugin-build'));
    process.stderr.write(`[managed plugin] ${build.summary} (${build.ms} ms with the script's start)\n`);
    stateDir = join(node.dir, 'stowage-state');
    await mkdir(stateDir);
    const t0 = Date.now();
    await docker(['plugin', 'create', PLUGIN, build.dir]);
    const t1 = Date.now();
    // The engine's API socket is docker.sock in the node's directory, not /var/run.
    await docker(['plugin', 'set', PLUGIN, `state.source=${stateDir}`, `docker-run.source=${node.dir}`]);
    await docker(['plugin', 'enable', PLUGIN]);
    process.stderr.write(`[managed plugin] docker plugin create ${t1 - t0} ms, enable ${Date.now() - t1} ms\n`);
    pluginId = (await docker(['plugin', 'inspect', PLUGIN, '--format', '{{.Id}}'])).stdout.trim();
  }, 600_000);

  afterAll(async () => {
    if (node !== undefined) await stopPlugin(node, PLUGIN);
    await stopAll();
  }, 180_000);

  it('is created from the registry-free build and enabled as a volume driver', async () => {
    const [config] = JSON.parse((await docker(['plugin', 'inspect', PLUGIN])).stdout) as Array<{
      Enabled: boolean; Config: { Interface: { Types: string[] } };
    }>;
    expect(config!.Enabled).toBe(true);
    expect(config!.Config.Interface.Types).toEqual(['docker.volumedriver/1.0']);
    expect(build.summary).toMatch(/rootfs \d+(\.\d)? MiB/);
    // The plugin's own process (its task's pid is the entrypoint, node) runs in the daemon's environment.
    const task = await pluginTask(node, pluginId);
    const environ = (await readFile(`/proc/${task!.pid}/environ`, 'utf8')).split('\0');
    for (const [name, value] of Object.entries(DAEMON_ENVIRONMENT)) expect(environ).toContain(`${name}=${value}`);
  });

  it('creates a volume that one container writes and the next reads', async () => {
    await docker(['volume', 'create', '-d', PLUGIN, 'pv1']);
    expect(await volumes()).toContain(`${DRIVER} pv1`);
    await run(['-v', 'pv1:/data', node.image, 'sh', '-c', 'echo first > /data/log']);
    expect((await run(['-v', 'pv1:/data', node.image, 'cat', '/data/log'])).stdout).toBe('first');
    // The data and the state live on the host bind mount, not in the plugin's rootfs.
    expect((await readFile(join(stateDir, 'volumes/pv1/log'), 'utf8')).trim()).toBe('first');
  });

  it('survives kill -9 of the plugin process: volume listed, data intact, a running container keeps its mount', async () => {
    await docker(['run', '-d', '--name', 'keeper', '--network', 'none', '-v', 'pv1:/data', node.image, 'sleep', '100000']);
    const before = await pluginTask(node, pluginId);
    expect(before?.status).toBe('RUNNING');
    process.kill(before!.pid, 'SIGKILL');
    const after = await waitForPluginProcess(node, pluginId, before!.pid);
    expect(after).not.toBe(before!.pid);

    expect(await volumes()).toContain(`${DRIVER} pv1`);
    await docker(['exec', 'keeper', 'sh', '-c', 'echo after-kill >> /data/log']);
    expect((await run(['-v', 'pv1:/data', node.image, 'cat', '/data/log'])).stdout).toBe('first\nafter-kill');
    // The restarted daemon took over the mount record: the volume is still counted as mounted.
    const status = JSON.parse((await docker(['volume', 'inspect', 'pv1'])).stdout)[0].Status as Record<string, string>;
    expect(status.mounts).toBe('1');
    // The plugin reaches the engine's API and knows its own driver name: it sees who uses the volume.
    expect(status.usedBy).toMatch(/container keeper \(/);
    const rm = await node.docker(['volume', 'rm', 'pv1'], { reject: false });
    expect(rm.stderr).toMatch(/in use/);
  });

  it('survives an engine restart (--live-restore): volume listed, data intact, the container keeps its mount', async () => {
    await node.restartEngine();
    expect(await volumes()).toContain(`${DRIVER} pv1`);
    expect((await docker(['ps', '--format', '{{.Names}}'])).stdout.split('\n')).toContain('keeper');
    await docker(['exec', 'keeper', 'sh', '-c', 'echo after-engine-restart >> /data/log']);
    expect((await run(['-v', 'pv1:/data', node.image, 'cat', '/data/log'])).stdout).toBe('first\nafter-kill\nafter-engine-restart');
    // Removing the container releases the volume through the same daemon.
    await docker(['rm', '-f', 'keeper']);
    const status = JSON.parse((await docker(['volume', 'inspect', 'pv1'])).stdout)[0].Status as Record<string, string>;
    expect(status.mounts).toBe('0');
  });

  it('applies docker plugin set after disable and enable: STOWAGE_ON_REMOVE=retain keeps removed data', async () => {
    // Volumes of a plugin count as its users: disabling needs -f even with no container running.
    const refused = await node.docker(['plugin', 'disable', PLUGIN], { reject: false });
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr).toMatch(/in use/);
    await docker(['plugin', 'disable', '-f', PLUGIN]);
    await docker(['plugin', 'set', PLUGIN, 'STOWAGE_ON_REMOVE=retain']);
    await docker(['plugin', 'enable', PLUGIN]);
    expect(await volumes()).toContain(`${DRIVER} pv1`);

    await docker(['volume', 'rm', 'pv1']);
    expect(await volumes()).not.toContain(`${DRIVER} pv1`);
    const removed = join(stateDir, 'volumes/.stowage/removed');
    const kept = (await readdir(removed)).filter((entry) => entry.startsWith('pv1'));
    expect(kept).toHaveLength(1);
    expect(await readFile(join(removed, kept[0]!, 'log'), 'utf8')).toBe('first\nafter-kill\nafter-engine-restart\n');
  });

  it('refuses to start on an empty state directory after serving volumes, so Docker never swaps in a local volume', async () => {
    await docker(['volume', 'create', '-d', PLUGIN, 'pv2']);
    await run(['-v', 'pv2:/data', node.image, 'sh', '-c', 'echo precious > /data/p']);
    const empty = join(node.dir, 'empty-state');
    await mkdir(empty);
    await docker(['plugin', 'disable', '-f', PLUGIN]);
    await docker(['plugin', 'set', PLUGIN, `state.source=${empty}`]);
    const enable = await node.docker(['plugin', 'enable', PLUGIN], { reject: false, timeoutMs: 120_000 });
    expect(enable.exitCode).not.toBe(0);
    // The daemon says why in its output, which the engine logs.
    expect(await readFile(join(node.dir, 'dockerd.log'), 'utf8')).toMatch(/holds no stowage state/);
    // With the plugin down the engine refuses the volume instead of making a local one.
    const used = await node.docker(['run', '--rm', '--network', 'none', '-v', 'pv2:/data', node.image, 'ls', '/data'], { reject: false });
    expect(used.exitCode).not.toBe(0);
    expect(await volumes()).not.toContain('local pv2');

    expect(used.stderr).toMatch(/disabled/);
    // The engine restarted the refusing plugin until enable gave up; it cleans up after answering.
    await waitForNoPluginTask(node, pluginId);
    await docker(['plugin', 'set', PLUGIN, `state.source=${stateDir}`]);
    await enablePlugin(node, PLUGIN);
    expect(await volumes()).toContain(`${DRIVER} pv2`);
    expect((await run(['-v', 'pv2:/data', node.image, 'cat', '/data/p'])).stdout).toBe('precious');
    await docker(['volume', 'rm', 'pv2']);
  });

  it('comes back after a registry-free upgrade (disable, rm, create, set, enable) with its volumes and data', async () => {
    await docker(['volume', 'create', '-d', PLUGIN, 'pv3']);
    await run(['-v', 'pv3:/data', node.image, 'sh', '-c', 'echo upgraded > /data/u']);
    await docker(['plugin', 'disable', '-f', PLUGIN]);
    await docker(['plugin', 'rm', '-f', PLUGIN]);
    await docker(['plugin', 'create', PLUGIN, build.dir]);
    await docker(['plugin', 'set', PLUGIN, `state.source=${stateDir}`, `docker-run.source=${node.dir}`]);
    await enablePlugin(node, PLUGIN);
    pluginId = (await docker(['plugin', 'inspect', PLUGIN, '--format', '{{.Id}}'])).stdout.trim();
    expect(await volumes()).toContain(`${DRIVER} pv3`);
    expect((await run(['-v', 'pv3:/data', node.image, 'cat', '/data/u'])).stdout).toBe('upgraded');
    await docker(['volume', 'rm', 'pv3']);
  });

  it('drops the mount records a forced disable leaked once no container uses the volume', async () => {
    await docker(['plugin', 'disable', '-f', PLUGIN]);
    // A grace long enough to see the leaked record after enable, short enough to see it dropped.
    await docker(['plugin', 'set', PLUGIN, 'STOWAGE_MOUNT_GRACE=20', 'STOWAGE_RECONCILE_INTERVAL=1']);
    await enablePlugin(node, PLUGIN);
    await docker(['volume', 'create', '-d', PLUGIN, 'pv4']);
    await docker(['run', '-d', '--name', 'leaker', '--network', 'none', '-v', 'pv4:/data', node.image, 'sleep', '100000']);
    await docker(['plugin', 'disable', '-f', PLUGIN]);
    // The container keeps its mount while the plugin is down; its Unmount goes nowhere.
    await docker(['exec', 'leaker', 'sh', '-c', 'echo while-disabled > /data/w']);
    await docker(['rm', '-f', 'leaker']);
    await enablePlugin(node, PLUGIN);
    const mounts = async () => (JSON.parse((await docker(['volume', 'inspect', 'pv4'])).stdout)[0].Status as Record<string, string>).mounts;
    expect(await mounts()).toBe('1');
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && (await mounts()) !== '0') await new Promise((r) => setTimeout(r, 500));
    expect(await mounts()).toBe('0');
    expect((await run(['-v', 'pv4:/data', node.image, 'cat', '/data/w'])).stdout).toBe('while-disabled');
    await docker(['volume', 'rm', 'pv4']);
  });

  it('survives a plain engine restart (no --live-restore): containers stop, the volume stays a stowage volume with its data', async () => {
    // The engine being stopped decides: this restart (of the --live-restore engine) keeps
    // everything running and starts one without the flag, whose restart below is the plain one.
    await node.restartEngine({ daemonArgs: [] });
    await docker(['volume', 'create', '-d', PLUGIN, 'pv5']);
    await run(['-v', 'pv5:/data', node.image, 'sh', '-c', 'echo before-restart > /data/r']);
    await docker(['run', '-d', '--name', 'plain', '--network', 'none', '-v', 'pv5:/data', node.image, 'sleep', '100000']);
    const before = await pluginTask(node, pluginId);
    expect(before?.status).toBe('RUNNING');

    await node.restartEngine();
    expect((await docker(['inspect', '--format', '{{.State.Status}}', 'plain'])).stdout.trim()).toBe('exited');
    // The engine stopped the plugin with its containers and started it afresh.
    const after = await waitForPluginProcess(node, pluginId, before!.pid);
    expect(after).not.toBe(before!.pid);
    const listed = await volumes();
    expect(listed).toContain(`${DRIVER} pv5`);
    expect(listed).not.toContain('local pv5');
    const reread = await run(['-v', 'pv5:/data', node.image, 'sh', '-c', 'cat /data/r; echo after-restart >> /data/r']);
    // That run used the stowage volume: its write is in the plugin's state directory. All three
    // at once, so a failure tells a container that saw no data from output that went missing.
    const onDisk = await readFile(join(stateDir, 'volumes/pv5/r'), 'utf8').catch((err: unknown) => `unreadable: ${String(err)}`);
    expect({ stdout: reread.stdout, stderr: reread.stderr, onDisk })
      .toEqual({ stdout: 'before-restart', stderr: '', onDisk: 'before-restart\nafter-restart\n' });
    expect(await volumes()).not.toContain('local pv5');
    // The engine sends no Unmount for the container it stops on the way down (seen: the count is
    // still 1 right after the restart); the reconciliation drops the record once
    // STOWAGE_MOUNT_GRACE has passed (60 s by default, 20 s as set by the test above).
    const mounts = async () => (JSON.parse((await docker(['volume', 'inspect', 'pv5'])).stdout)[0].Status as Record<string, string>).mounts;
    await expect.poll(mounts, { timeout: 90_000, interval: 500 }).toBe('0');
    await docker(['rm', 'plain']);
    await docker(['volume', 'rm', 'pv5']);
  });
});
