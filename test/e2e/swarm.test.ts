/**
 * A two-node Docker Swarm on one machine whose service's data follows its task: two engines,
 * each in a mount and network namespace of its own joined by a veth pair, on one shared vfs
 * store. Node a runs the stowage daemon on the legacy socket, node b runs stowage as the
 * managed (v2) plugin, so one service's volume is served by both kinds in turn.
 *
 * Swarm schedules a service with a stowage volume only on nodes whose engine reports the
 * plugin, and an engine reports a legacy plugin only once it was activated. The daemon has its
 * engine activate it as soon as it serves, so a's daemon starts on a node already in the swarm
 * and a never runs a docker volume command before its first task. A managed plugin is reported
 * as `stowage:latest` once enabled; Swarm's plugin filter takes it for `volume-driver=stowage`.
 */
import { mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { linkNodes, startDockerNode, stopAll, type DockerNode } from '../helpers/docker-node.js';
import { buildPluginDir, enablePlugin, pluginLog, stopPlugin, type PluginBuild } from '../helpers/managed-plugin.js';
import { pluginCall } from '../helpers/plugin-client.js';
import { checkDocker, findExecutable, systemSuite, type ComponentCheck } from '../helpers/requirements.js';
import { startStowageInNode, type StowageInNode } from '../helpers/stowage-in-node.js';

function checkSwarm(): ComponentCheck {
  const docker = checkDocker();
  if (!docker.ok) return docker;
  if (findExecutable('ip') === undefined) return { ok: false, why: 'ip is missing (apt-get install -y iproute2)' };
  // containerd's CLI names the managed plugin's pid, for the cleanup.
  if (findExecutable('ctr') === undefined) return { ok: false, why: 'missing ctr (apt-get install -y containerd)' };
  return { ok: true };
}
const skip = systemSuite('docker + iproute2 (swarm, managed plugin)', checkSwarm());
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const SERVICE = 'db';
const VOLUME = 'db';
/** A second volume of the same task, removed from the other node at the end. */
const CACHE = 'cache';
const ADDRESS_A = '198.18.0.1';
const ADDRESS_B = '198.18.0.2';
const PLUGIN = 'stowage';
/** Where b's plugin finds the shared store: under its state mount, as an operator would mount it. */
const PLUGIN_STORE = '/var/lib/stowage/shared';
const timings: Record<string, number> = {};

async function timed<T>(phase: string, work: () => Promise<T>): Promise<T> {
  const started = Date.now();
  try {
    return await work();
  } finally {
    timings[phase] = Date.now() - started;
  }
}

describe.skipIf(skip)('a Swarm service whose stowage volume follows its task from a legacy-socket node to a managed-plugin node', { timeout: 120_000 }, () => {
  /** b's state directory (the plugin's state mount); the shared store is its `shared` subdirectory. */
  let stateB = '';
  /** The shared store as node a (and the test) reach it. */
  let store = '';
  let a: DockerNode;
  let b: DockerNode;
  let daemonA: StowageInNode | undefined;
  let build: PluginBuild;
  let pluginIdB = '';
  let idA = '';
  let idB = '';

  /** Waits until `check` answers a value (not undefined); on timeout says what it saw last. */
  async function until<T>(what: string, check: () => Promise<T | undefined>, ms = 60_000): Promise<T> {
    const deadline = Date.now() + ms;
    for (;;) {
      const value = await check();
      if (value !== undefined) return value;
      if (Date.now() > deadline) {
        const tasks = await a.docker(['service', 'ps', SERVICE, '--no-trunc', '--format', '{{.ID}} {{.DesiredState}} {{.CurrentState}} {{.Error}}'], { reject: false });
        throw new Error(`${what}: not reached after ${ms} ms\ntasks:\n${tasks.stdout}${tasks.stderr}\n` +
          `stowage on a:\n${(await daemonA?.log())?.slice(-3000)}\nstowage plugin on b:\n${(await pluginLog(b, pluginIdB)).slice(-3000)}`);
      }
      await sleep(250);
    }
  }
  /** The id of the service's container running on `node`, once there is one. */
  const runningTask = (node: DockerNode) => until(`a running ${SERVICE} task on node ${node.name}`, async () => {
    const id = (await node.docker(['ps', '-q', '--filter', `label=com.docker.swarm.service.name=${SERVICE}`])).stdout.trim();
    return id === '' ? undefined : id;
  });
  const taskContainers = async (node: DockerNode) =>
    (await node.docker(['ps', '-aq', '--filter', `label=com.docker.swarm.service.name=${SERVICE}`])).stdout.split('\n').filter(Boolean);
  const enginePlugins = async (id: string) =>
    (await a.docker(['node', 'inspect', id, '--format', '{{json .Description.Engine.Plugins}}'])).stdout;

  beforeAll(async () => {
    stateB = await mkdtemp(join(tmpdir(), 'stowage-swarm-b-state-'));
    store = join(stateB, 'shared');
    await mkdir(store, { mode: 0o700 });
    const [nodes, built] = await Promise.all([
      timed('engines', () => Promise.all([
        startDockerNode({ name: 'swarm-a', network: true }),
        startDockerNode({ name: 'swarm-b', network: true }),
      ])),
      timed('plugin build', () => buildPluginDir(`${stateB}-plugin`)),
    ]);
    [a, b] = nodes;
    build = built;
    await timed('plugin create on b', () => b.docker(['plugin', 'create', PLUGIN, build.dir], { timeoutMs: 120_000 }));
    pluginIdB = (await b.docker(['plugin', 'inspect', PLUGIN, '--format', '{{.Id}}'])).stdout.trim();
    await linkNodes(a, b, `${ADDRESS_A}/24`, `${ADDRESS_B}/24`);
    await timed('swarm init and join', async () => {
      await a.docker(['swarm', 'init', '--advertise-addr', ADDRESS_A]);
      const token = (await a.docker(['swarm', 'join-token', '-q', 'worker'])).stdout.trim();
      await b.docker(['swarm', 'join', '--advertise-addr', ADDRESS_B, '--token', token, `${ADDRESS_A}:2377`]);
    });
    idA = (await a.docker(['info', '--format', '{{.Swarm.NodeID}}'])).stdout.trim();
    idB = (await b.docker(['info', '--format', '{{.Swarm.NodeID}}'])).stdout.trim();
  }, 180_000);

  /** Started in the first test, on nodes already in the swarm, as an operator adds stowage to a cluster. */
  async function startDaemons(): Promise<void> {
    await Promise.all([
      timed('daemon on a', async () => {
        daemonA = await startStowageInNode(a, {
          args: ['--node-id', 'a', '--opt', `vfs.path=${store}`, '--opt', 'vfs.shared=true',
            '--docker-host', a.dockerHost, '--heartbeat-interval', '0.5'],
        });
      }),
      timed('plugin set and enable on b', async () => {
        // The store sits at another path inside the plugin than on a: the store itself names no path.
        await b.docker(['plugin', 'set', PLUGIN, `state.source=${stateB}`, `docker-run.source=${b.dir}`,
          `STOWAGE_OPTS=vfs.path=${PLUGIN_STORE} vfs.shared=true`, 'STOWAGE_NODE_ID=b', 'STOWAGE_HEARTBEAT_INTERVAL=0.5']);
        await enablePlugin(b, PLUGIN);
      }),
    ]);
  }

  afterAll(async () => {
    // The service first, so that its containers are gone while the daemons can still unmount.
    await a?.docker(['service', 'rm', SERVICE], { reject: false });
    await sleep(1_000);
    if (b !== undefined) await stopPlugin(b, PLUGIN);
    // Nodes remove their containers before they stop the daemons spawned in them.
    await stopAll();
    if (stateB !== '') {
      await rm(stateB, { recursive: true, force: true });
      await rm(`${stateB}-plugin`, { recursive: true, force: true });
    }
    process.stderr.write(`[swarm] phases (ms): ${JSON.stringify(timings)}\n`);
  }, 120_000);

  it('runs the task on a node whose daemon just started, with no docker volume command there', async () => {
    await a.docker(['node', 'update', '--availability', 'drain', idB]);
    await startDaemons();
    const container = await timed('task running on a', async () => {
      await a.docker(['service', 'create', '--detach', '--name', SERVICE,
        '--mount', `type=volume,source=${VOLUME},destination=/data,volume-driver=stowage`,
        '--mount', `type=volume,source=${CACHE},destination=/cache,volume-driver=stowage`,
        // The task's node id, so that each task says where it ran.
        '--env', 'NODE={{.Node.ID}}', '--stop-grace-period', '1s', '--restart-delay', '0s',
        // A task that finishes (`finish` below) is not replaced: its container stays, exited.
        '--restart-condition', 'on-failure',
        a.image, 'sh', '-c', 'echo "written on $NODE" >> /data/log; echo "$NODE" > /cache/last; until [ -e /tmp/finish ]; do sleep 0.2; done']);
      return runningTask(a);
    });
    await expect.poll(async () => (await a.docker(['exec', container, 'cat', '/data/log'], { reject: false })).stdout,
      { timeout: 10_000 }).toBe(`written on ${idA}`);
    const volume = (await pluginCall(daemonA!.socket, 'Get', { Name: VOLUME })).Volume as { Status: Record<string, string> };
    expect(volume.Status.mounts).toBe('1');
    expect(await readFile(join(store, VOLUME, 'log'), 'utf8')).toBe(`written on ${idA}\n`);
    // a reports the legacy plugin (its daemon had the engine activate it); b reports the managed
    // plugin by its name with the tag, which Swarm's filter takes for `volume-driver=stowage`.
    expect(await enginePlugins(idA)).toContain('"Type":"Volume","Name":"stowage"');
    await timed('plugin reported by b', () => until('node b reporting the stowage plugin', async () =>
      (await enginePlugins(idB)).includes('"Type":"Volume","Name":"stowage:latest"') ? true : undefined));
  });

  it('does not place a service naming the driver stowage:latest on the legacy-socket node', async () => {
    // The filter accepts a node's "NAME:latest" for a service's "NAME", not the other way round.
    await a.docker(['service', 'create', '--detach', '--name', 'tagged',
      '--mount', 'type=volume,source=tagged,destination=/data,volume-driver=stowage:latest', a.image, 'sleep', '100000']);
    try {
      const error = await until('the tagged service pending on a', async () => {
        const tasks = (await a.docker(['service', 'ps', 'tagged', '--no-trunc', '--format', '{{.CurrentState}} {{.Error}}'])).stdout;
        return /missing plugin on 1 node/.test(tasks) ? tasks : undefined;
      }, 30_000);
      expect(error).toMatch(/^Pending/);
    } finally {
      await a.docker(['service', 'rm', 'tagged']);
    }
    expect((await a.docker(['volume', 'ls', '-q'])).stdout.split('\n')).not.toContain('tagged');
  });

  it('moves the task to the other node on drain, where it finds the data and writes more', async () => {
    await a.docker(['node', 'update', '--availability', 'active', idB]);
    const container = await timed('task moved from a to b', async () => {
      await a.docker(['node', 'update', '--availability', 'drain', idA]);
      return runningTask(b);
    });
    await expect.poll(async () => (await b.docker(['exec', container, 'cat', '/data/log'], { reject: false })).stdout,
      { timeout: 10_000 }).toBe(`written on ${idA}\nwritten on ${idB}`);
    // On b the managed plugin serves the volume; its driver name is what the plugin looks for
    // among b's containers' mounts (STOWAGE_DRIVER_NAME).
    const mounts = JSON.parse((await b.docker(['inspect', '--format', '{{json .Mounts}}', container])).stdout) as Array<{
      Name?: string; Driver?: string; }>;
    expect(mounts.find((mount) => mount.Name === VOLUME)?.Driver).toBe('stowage:latest');
    expect((await b.docker(['volume', 'ls', '--format', '{{.Driver}} {{.Name}}'])).stdout.split('\n')).toContain(`stowage:latest ${VOLUME}`);
    // The task on a is shut down: Swarm keeps its container, stopped, as task history; a no
    // longer mounts the volume.
    const left = await taskContainers(a);
    expect(left).toHaveLength(1);
    expect((await a.docker(['inspect', '--format', '{{.State.Status}}', left[0]!])).stdout.trim()).toBe('exited');
    await expect.poll(async () => ((await pluginCall(daemonA!.socket, 'Get', { Name: VOLUME })).Volume as {
      Status: Record<string, string> }).Status.mounts).toBe('0');
  });

  it('refuses removing the volume while a stopped task container on the other node references it', async () => {
    // Scaling down would remove the task's container; a task that completes keeps it.
    await timed('task on b completed', async () => {
      await b.docker(['exec', await runningTask(b), 'touch', '/tmp/finish']);
      await until(`the ${SERVICE} task on b completed`, async () =>
        (await b.docker(['ps', '-q', '--filter', `label=com.docker.swarm.service.name=${SERVICE}`])).stdout.trim() === '' ? true : undefined);
    });
    const stoppedOnB = await taskContainers(b);
    expect(stoppedOnB).toHaveLength(1);
    const name = (await b.docker(['inspect', '--format', '{{.Name}}', stoppedOnB[0]!])).stdout.trim().replace(/^\//, '');
    // a's own stopped task container (see above) would make a's engine refuse before asking stowage.
    await a.docker(['rm', ...await taskContainers(a)]);

    const usedBy = new RegExp(`still used on b: container ${name.replace(/\./g, '\\.')} \\(${stoppedOnB[0]!.slice(0, 12)}, exited\\)`);
    const refused = await until('a refusal naming the stopped container on b', async () => {
      const attempt = await a.docker(['volume', 'rm', VOLUME], { reject: false });
      expect(attempt.exitCode).not.toBe(0);
      return usedBy.test(attempt.stderr) ? attempt : undefined;
    }, 15_000);
    expect(refused.stderr).toMatch(/docker rm/);
    // Nothing was deleted: both nodes still list it, and its data is whole.
    expect((await a.docker(['volume', 'ls', '-q'])).stdout.split('\n')).toContain(VOLUME);
    expect((await b.docker(['volume', 'ls', '-q'])).stdout.split('\n')).toContain(VOLUME);
    expect(await readFile(join(store, VOLUME, 'log'), 'utf8')).toBe(`written on ${idA}\nwritten on ${idB}\n`);
  });

  it('removes the volumes from either node once the service is removed', async () => {
    await timed('service rm until the volume rm went through', async () => {
      await a.docker(['service', 'rm', SERVICE]);
      await until(`the ${SERVICE} task containers on b removed`, async () => ((await taskContainers(b)).length === 0 ? true : undefined));
      // b publishes that its container is gone within a heartbeat or an engine event.
      await until(`docker volume rm ${VOLUME} on a`, async () =>
        ((await a.docker(['volume', 'rm', VOLUME], { reject: false })).exitCode === 0 ? true : undefined), 15_000);
    });
    expect(await readFile(join(store, CACHE, 'last'), 'utf8')).toBe(`${idB}\n`);
    await b.docker(['volume', 'rm', CACHE]);
    for (const node of [a, b]) {
      const listed = (await node.docker(['volume', 'ls', '-q'])).stdout.split('\n');
      expect(listed).not.toContain(VOLUME);
      expect(listed).not.toContain(CACHE);
    }
    for (const name of [VOLUME, CACHE]) await expect(stat(join(store, name))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
