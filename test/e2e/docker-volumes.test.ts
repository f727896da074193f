import { readdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDockerNode, stopAll, type DockerNode } from '../helpers/docker-node.js';
import { pluginCall } from '../helpers/plugin-client.js';
import { checkDocker, systemSuite } from '../helpers/requirements.js';
import { startStowageInNode, type StowageInNode } from '../helpers/stowage-in-node.js';

const skip = systemSuite('docker', checkDocker());

/** Mount count of a volume as the plugin reports it in Get's Status. */
async function mountsOf(socket: string, name: string): Promise<number> {
  const reply = await pluginCall(socket, 'Get', { Name: name });
  return Number((reply.Volume as { Status: { mounts: string } }).Status.mounts);
}

describe.skipIf(skip)('stowage as the volume driver of a real Docker engine', { timeout: 120_000 }, () => {
  let node: DockerNode;
  let stowage: StowageInNode;
  const run = (args: string[]) => node.docker(['run', '--rm', '--network', 'none', ...args]);

  beforeAll(async () => {
    node = await startDockerNode({ name: 'e2e' });
    stowage = await startStowageInNode(node, { args: ['--node-id', 'e2e-node'] });
  });
  afterAll(async () => {
    await stopAll();
  });

  it('creates, lists and inspects a volume through the docker CLI', async () => {
    await node.docker(['volume', 'create', '-d', 'stowage', '-o', 'size=20M', 'e2e-vol']);
    const ls = await node.docker(['volume', 'ls', '--format', '{{.Driver}} {{.Name}}']);
    expect(ls.stdout.split('\n')).toContain('stowage e2e-vol');
    const [inspected] = JSON.parse((await node.docker(['volume', 'inspect', 'e2e-vol'])).stdout) as Array<{
      Driver: string; Scope: string; CreatedAt: string; Status: Record<string, string>;
    }>;
    expect(inspected!.Driver).toBe('stowage');
    expect(inspected!.Scope).toBe('local');
    expect(inspected!.Status).toMatchObject({ backend: 'vfs', size: '20MiB', createdBy: 'e2e-node', mounts: '0' });
    expect(Number.isNaN(Date.parse(inspected!.CreatedAt))).toBe(false);
  });

  it('keeps what one container writes for the next container', async () => {
    await run(['-v', 'e2e-vol:/data', node.image, 'sh', '-c', 'echo hello from one > /data/greeting']);
    const read = await run(['-v', 'e2e-vol:/data', node.image, 'cat', '/data/greeting']);
    expect(read.stdout).toBe('hello from one');
    expect(await mountsOf(stowage.socket, 'e2e-vol')).toBe(0);
  });

  it('counts two containers that mount the volume at once and releases it after the last', async () => {
    await node.docker(['run', '-d', '--name', 'holder-a', '--network', 'none', '-v', 'e2e-vol:/data', node.image, 'sleep', '300']);
    await node.docker(['run', '-d', '--name', 'holder-b', '--network', 'none', '-v', 'e2e-vol:/data', node.image, 'sleep', '300']);
    expect(await mountsOf(stowage.socket, 'e2e-vol')).toBe(2);
    const path = (await pluginCall(stowage.socket, 'Path', { Name: 'e2e-vol' })).Mountpoint;
    expect(path).toMatch(/e2e-vol$/);
    await node.docker(['rm', '-f', 'holder-a']);
    expect(await mountsOf(stowage.socket, 'e2e-vol')).toBe(1);
    // The survivor still reads and writes through its mount.
    await node.docker(['exec', 'holder-b', 'sh', '-c', 'echo still here > /data/b']);
    expect((await node.docker(['exec', 'holder-b', 'cat', '/data/greeting'])).stdout).toBe('hello from one');
    await node.docker(['rm', '-f', 'holder-b']);
    expect(await mountsOf(stowage.socket, 'e2e-vol')).toBe(0);
    expect((await pluginCall(stowage.socket, 'Path', { Name: 'e2e-vol' })).Mountpoint).toBe('');
  });

  it('removes the data with docker volume rm: a re-created volume of the same name is empty', async () => {
    const status = JSON.parse((await node.docker(['volume', 'inspect', 'e2e-vol'])).stdout)[0].Status as { path: string };
    expect((await readdir(status.path)).sort()).toEqual(['b', 'greeting']);
    await node.docker(['volume', 'rm', 'e2e-vol']);
    expect((await node.docker(['volume', 'ls', '-q'])).stdout.split('\n')).not.toContain('e2e-vol');
    await node.docker(['volume', 'create', '-d', 'stowage', 'e2e-vol']);
    const listing = await run(['-v', 'e2e-vol:/data', node.image, 'ls', '-A', '/data']);
    expect(listing.stdout).toBe('');
    await node.docker(['volume', 'rm', 'e2e-vol']);
  });

  it('lets a container running as uid 1000 write to a volume made with -o uid=1000, inside a 0700 store', async () => {
    await node.docker(['volume', 'create', '-d', 'stowage', '-o', 'uid=1000', '-o', 'gid=1000', 'e2e-owned']);
    const status = JSON.parse((await node.docker(['volume', 'inspect', 'e2e-owned'])).stdout)[0].Status as { path: string };
    // Local users cannot get through the store; Docker mounts the volume directory itself.
    expect((await stat(dirname(status.path))).mode & 0o777).toBe(0o700);
    const wrote = await run(['--user', '1000:1000', '-v', 'e2e-owned:/data', node.image, 'sh', '-c', 'echo mine > /data/f && cat /data/f && id -u']);
    expect(wrote.stdout).toBe('mine\n1000');
    await node.docker(['volume', 'rm', 'e2e-owned']);
  });

  it('shows the plugin\'s own error text for bad names and options, and creates nothing', async () => {
    const badOption = await node.docker(['volume', 'create', '-d', 'stowage', '-o', 'colour=red', 'painted'], { reject: false });
    expect(badOption.exitCode).not.toBe(0);
    expect(badOption.stderr).toMatch(/unknown volume option "colour"/);
    const badSize = await node.docker(['volume', 'create', '-d', 'stowage', '-o', 'size=lots', 'sized'], { reject: false });
    expect(badSize.stderr).toMatch(/expected a size such as/);
    const badName = await node.docker(['volume', 'create', '-d', 'stowage', 'a..b'], { reject: false });
    expect(badName.exitCode).not.toBe(0);
    expect(badName.stderr).toMatch(/invalid volume name "a\.\.b"/);
    const names = (await node.docker(['volume', 'ls', '-q'])).stdout.split('\n');
    expect(names).not.toContain('painted');
    expect(names).not.toContain('sized');
    expect((await pluginCall(stowage.socket, 'List', {})).Volumes).toEqual([]);
  });

  it('refuses to remove a volume a running container uses, with the reason', async () => {
    await node.docker(['volume', 'create', '-d', 'stowage', 'busy-vol']);
    await node.docker(['run', '-d', '--name', 'busy', '--network', 'none', '-v', 'busy-vol:/data', node.image, 'sleep', '300']);
    const refused = await node.docker(['volume', 'rm', 'busy-vol'], { reject: false });
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr).toMatch(/in use/);
    // Even when Docker's own check is bypassed, the plugin refuses while it is mounted.
    const direct = await pluginCall(stowage.socket, 'Remove', { Name: 'busy-vol' });
    expect(String(direct.Err)).toMatch(/mounted 1 time\(s\) on node e2e-node/);
    await node.docker(['rm', '-f', 'busy']);
    await node.docker(['volume', 'rm', 'busy-vol']);
  });

  it('survives a daemon restart while a container holds a volume', async () => {
    await node.docker(['volume', 'create', '-d', 'stowage', 'durable']);
    await node.docker(['run', '-d', '--name', 'keeper', '--network', 'none', '-v', 'durable:/data', node.image,
      'sh', '-c', 'echo before > /data/log; sleep 300']);
    expect(await mountsOf(stowage.socket, 'durable')).toBe(1);
    await stowage.stop('SIGKILL');
    stowage = await startStowageInNode(node, { args: ['--node-id', 'e2e-node'], logName: 'stowage-2' });
    expect(await mountsOf(stowage.socket, 'durable')).toBe(1);
    await node.docker(['exec', 'keeper', 'sh', '-c', 'echo after >> /data/log']);
    expect((await node.docker(['exec', 'keeper', 'cat', '/data/log'])).stdout).toBe('before\nafter');
    await node.docker(['rm', '-f', 'keeper']);
    // Docker's Unmount for the mount made before the restart reached the new daemon.
    expect(await mountsOf(stowage.socket, 'durable')).toBe(0);
    expect(await stowage.log()).not.toMatch(/unknown mount id/);
    const read = await run(['-v', 'durable:/data', node.image, 'cat', '/data/log']);
    expect(read.stdout).toBe('before\nafter');
    await node.docker(['volume', 'rm', 'durable']);
    expect(await readdir(join(stowage.root, 'volumes'))).toEqual(['.stowage']);
  });
});
