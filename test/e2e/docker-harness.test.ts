/**
 * Smoke test of the docker-node harness against the real engine: if this
 * fails, every other Docker e2e suite would fail for reasons unrelated to
 * stowage.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { mkdir, readFile, readlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDockerNode, stopAll, type DockerNode } from '../helpers/docker-node.js';
import { checkDocker, systemSuite } from '../helpers/requirements.js';

const skip = systemSuite('docker', checkDocker());
const HOOK_MS = 120_000;

/** Orphans linger as zombies until pid 1 reaps them; a zombie is not alive. */
function alive(pid: number): boolean {
  try {
    return !/\) [ZX] /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** Just enough of the volume plugin protocol to prove the socket is found: one dir per volume. */
async function serveFakeVolumeDriver(socket: string, root: string): Promise<Server> {
  const reply = async (method: string, body: { Name?: string }): Promise<object> => {
    const mountpoint = join(root, body.Name ?? '');
    switch (method) {
      case '/Plugin.Activate':
        return { Implements: ['VolumeDriver'] };
      case '/VolumeDriver.Create':
        await mkdir(mountpoint, { recursive: true });
        return {};
      case '/VolumeDriver.Get':
        return existsSync(mountpoint) ? { Volume: { Name: body.Name, Mountpoint: mountpoint } } : { Err: 'no such volume' };
      case '/VolumeDriver.Mount':
      case '/VolumeDriver.Path':
        return { Mountpoint: mountpoint };
      case '/VolumeDriver.Capabilities':
        return { Capabilities: { Scope: 'local' } };
      default: // Unmount, Remove, List: nothing to do here
        return method === '/VolumeDriver.List' ? { Volumes: [] } : {};
    }
  };
  const server = createServer((req, res) => {
    let text = '';
    req.on('data', (chunk: Buffer) => (text += chunk.toString()));
    req.on('end', () => {
      void reply(req.url ?? '', (text === '' ? {} : JSON.parse(text)) as { Name?: string }).then((answer) =>
        res.end(JSON.stringify(answer)),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  return server;
}

describe.skipIf(skip)('docker test harness', { timeout: 120_000 }, () => {
  let a: DockerNode;
  let b: DockerNode;

  beforeAll(async () => {
    const started = Date.now();
    [a, b] = await Promise.all([startDockerNode({ name: 'a' }), startDockerNode({ name: 'b' })]);
    console.log(`two nodes in parallel: ${Date.now() - started} ms; a: ${JSON.stringify(a.timings)}; b: ${JSON.stringify(b.timings)}`);
  }, HOOK_MS);

  // stopAll also covers a node whose sibling failed to start inside Promise.all.
  afterAll(stopAll, HOOK_MS);

  it('runs a container without a network', async () => {
    const run = await a.docker(['run', '--rm', '--network', 'none', a.image, 'sh', '-c', 'echo hello']);
    expect(run.stdout.trim()).toBe('hello');
  });

  it('shares a local-driver volume between containers', async () => {
    await a.docker(['volume', 'create', 'smoke']);
    const mount = ['--network', 'none', '-v', 'smoke:/data', a.image];
    await a.docker(['run', '--rm', ...mount, 'sh', '-c', 'echo persisted > /data/f && sync']);
    const read = await a.docker(['run', '--rm', ...mount, 'cat', '/data/f']);
    expect(read.stdout.trim()).toBe('persisted');
    await a.docker(['volume', 'rm', 'smoke']);
    const list = await a.docker(['volume', 'ls', '-q']);
    expect(list.stdout.split('\n')).not.toContain('smoke');
  });

  it('keeps the two nodes apart', async () => {
    await a.docker(['run', '-d', '--name', 'only-on-a', '--network', 'none', a.image, 'sleep', '300']);
    const names = async (node: DockerNode): Promise<string[]> =>
      (await node.docker(['ps', '-a', '--format', '{{.Names}}'])).stdout.split('\n').filter(Boolean);
    expect(await names(a)).toEqual(['only-on-a']);
    expect(await names(b)).toEqual([]);

    // Separate /etc/docker means separate engine keys, hence separate engine IDs.
    const id = async (node: DockerNode): Promise<string> => (await node.docker(['info', '--format', '{{.ID}}'])).stdout.trim();
    expect(await id(a)).not.toBe(await id(b));

    // Each engine's /run/docker/plugins is its own pluginsDir.
    await writeFile(join(a.pluginsDir, 'marker'), 'a');
    expect((await a.execInNamespace(['ls', '/run/docker/plugins'])).stdout.trim()).toBe('marker');
    expect((await b.execInNamespace(['ls', '/run/docker/plugins'])).stdout.trim()).toBe('');
  });

  it('runs programs inside the node namespace, where its mounts live', async () => {
    const target = join(a.dir, 'mnt');
    await a.execInNamespace(['mkdir', '-p', target]);
    await a.execInNamespace(['mount', '-t', 'tmpfs', 'smoke', target]);
    await a.execInNamespace(['sh', '-c', 'echo inside > "$1/f"', 'sh', target]);
    expect((await a.execInNamespace(['cat', join(target, 'f')])).stdout.trim()).toBe('inside');
    expect(existsSync(join(target, 'f'))).toBe(false); // the host sees the bare directory

    const log = join(a.dir, 'logs', 'sleeper.log');
    const sleeper = a.spawnInNamespace(['sh', '-c', 'echo started; exec sleep 300'], { logFile: log });
    await expect.poll(() => readFile(log, 'utf8'), { timeout: 5_000 }).toContain('started');
    // The pid callers get is the program itself, in the node's namespace: killing it kills the program.
    expect(readFileSync(`/proc/${sleeper.pid}/cmdline`, 'utf8').split('\0').join(' ').trim()).toBe('sleep 300');
    const ns = (pid: number | undefined): Promise<string> => readlink(`/proc/${pid}/ns/mnt`);
    expect(await ns(sleeper.pid)).toBe(await ns(a.holderPid));
    sleeper.kill('SIGTERM');
    const result = await sleeper;
    expect(result.signal).toBe('SIGTERM');
  });

  it("serves a legacy plugin socket placed in pluginsDir to that node's engine only", async () => {
    const volumes = join(a.dir, 'fake-volumes');
    const server = await serveFakeVolumeDriver(join(a.pluginsDir, 'fake.sock'), volumes);
    try {
      await a.docker(['volume', 'create', '-d', 'fake', 'v1']);
      await a.docker(['run', '--rm', '--network', 'none', '-v', 'v1:/data', a.image, 'sh', '-c', 'echo via-plugin > /data/f']);
      expect(await readFile(join(volumes, 'v1', 'f'), 'utf8')).toBe('via-plugin\n');
      await a.docker(['volume', 'rm', 'v1']);
      // Not `docker volume create -d fake` on b: an unknown driver costs 15 s of Docker's discovery retries.
      expect((await b.execInNamespace(['ls', '/run/docker/plugins'])).stdout).not.toContain('fake.sock');
      expect((await a.execInNamespace(['ls', '/run/docker/plugins'])).stdout).toContain('fake.sock');
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('stop() removes containers, processes and the node directory', async () => {
    const c = await startDockerNode({ name: 'c' });
    await c.docker(['run', '-d', '--network', 'none', c.image, 'sleep', '300']);
    const daemon = c.spawnInNamespace(['sleep', '300']);
    const pids = [c.holderPid, Number((await readFile(join(c.dir, 'docker.pid'), 'utf8')).trim()), daemon.pid ?? -1];
    const stopping = Date.now();
    await c.stop();
    console.log(`stop() with a running container and a spawned process: ${Date.now() - stopping} ms`);
    await c.stop(); // idempotent
    expect(existsSync(c.dir)).toBe(false);
    for (const pid of pids) expect(alive(pid), `pid ${pid}`).toBe(false);
  });
});
