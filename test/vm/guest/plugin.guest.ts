/**
 * End to end over the Docker plugin socket, inside the VM: the built daemon on the devicemapper
 * backend, driven the way dockerd drives it, across Unmount/Mount, a restart and a reboot; and a
 * hand mount (`stowage mount`) that a busy filesystem keeps.
 */
import { randomBytes, createHash } from 'node:crypto';
import { open, readFile, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { parseProcMounts } from '../../../src/core/proc-mounts.js';
import { assertCliBuilt, killAllDaemons, runCli, startDaemon, type DaemonHandle } from '../../helpers/daemon-process.js';
import { pluginCall } from '../../helpers/plugin-client.js';
import { destroyPool, makePoolFiles, teardownPool, type PoolFixture } from './dm-harness.js';

const SIZE = 96 * 2 ** 20;
const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

let fx: PoolFixture | undefined;
afterAll(async () => {
  await killAllDaemons();
  if (fx) await destroyPool(fx);
});

async function call(socket: string, method: string, body: object): Promise<Record<string, unknown>> {
  const reply = await pluginCall(socket, method, body, { timeoutMs: 120_000 });
  expect(reply.Err, `${method} ${JSON.stringify(body)}`).toBeFalsy();
  return reply;
}

async function mountOf(path: string) {
  return parseProcMounts(await readFile('/proc/self/mounts', 'utf8')).find((m) => m.target === path);
}

describe('stowage daemon on devicemapper over the plugin socket', () => {
  it('Create with a size, Mount an ext4 thin device of that size, data survives Unmount/Mount, a restart and a reboot, Remove frees the id', async () => {
    assertCliBuilt();
    fx = await makePoolFiles({ dataMiB: 512 });
    const socket = join(fx.dir, 'plugin.sock');
    const args = ['--backend', 'devicemapper', '--root', fx.root, '--node-id', 'vm-node', '--docker-host', 'none',
      ...Object.entries(fx.options).flatMap(([k, v]) => ['--opt', `${k}=${v}`])];
    const start = () => startDaemon(socket, args, { timeoutMs: 90_000 });
    let daemon: DaemonHandle = await start();

    await call(socket, 'Create', { Name: 'pgdata', Opts: { size: '96M' } });
    const mountpoint = String((await call(socket, 'Mount', { Name: 'pgdata', ID: 'c1' })).Mountpoint);
    const mounted = await mountOf(mountpoint);
    expect(mounted?.fstype).toBe('ext4');
    expect(mounted?.source).toMatch(new RegExp(`^/dev/mapper/${fx.poolName}-t\\d+$`));
    expect((await execa('blockdev', ['--getsize64', mounted!.source])).stdout).toBe(String(SIZE));
    const fsStat = await statfs(mountpoint);
    expect(fsStat.blocks * fsStat.bsize).toBeGreaterThan(0.85 * SIZE);
    expect(fsStat.blocks * fsStat.bsize).toBeLessThanOrEqual(SIZE);

    const payload = randomBytes(3 * 2 ** 20);
    const handle = await open(join(mountpoint, 'payload'), 'w');
    await handle.writeFile(payload);
    await handle.sync();
    await handle.close();

    await call(socket, 'Unmount', { Name: 'pgdata', ID: 'c1' });
    expect(await mountOf(mountpoint)).toBeUndefined();
    expect(String((await call(socket, 'Mount', { Name: 'pgdata', ID: 'c2' })).Mountpoint)).toBe(mountpoint);
    expect(sha(await readFile(join(mountpoint, 'payload')))).toBe(sha(payload));

    const got = await call(socket, 'Get', { Name: 'pgdata' });
    const status = (got.Volume as { Status: Record<string, string> }).Status;
    expect(status).toMatchObject({ backend: 'devicemapper', poolHealth: 'healthy', deviceSize: '96MiB', filesystem: 'ext4' });
    const thinId = status.thinId!;
    const info = await runCli(['info'], { env: { STOWAGE_SOCKET: socket }, timeoutMs: 90_000 });
    expect(info.stdout, `stowage info exited ${info.exitCode}: ${info.stderr}`).toMatch(/"poolHealth": "healthy"/);

    // A plain restart: the pool stays active and is adopted again.
    await daemon.stop();
    daemon = await start();
    expect((await call(socket, 'Path', { Name: 'pgdata' })).Mountpoint).toBe(mountpoint);
    expect(sha(await readFile(join(mountpoint, 'payload')))).toBe(sha(payload));

    // A reboot: devices gone; the restarted daemon re-creates the pool and re-mounts the volume.
    await daemon.stop();
    await teardownPool(fx);
    expect(await mountOf(mountpoint)).toBeUndefined();
    daemon = await start();
    expect(daemon.stderr()).toMatch(/re-created thin pool/);
    expect((await call(socket, 'Path', { Name: 'pgdata' })).Mountpoint).toBe(mountpoint);
    expect((await mountOf(mountpoint))?.fstype).toBe('ext4');
    expect(sha(await readFile(join(mountpoint, 'payload')))).toBe(sha(payload));

    await call(socket, 'Unmount', { Name: 'pgdata', ID: 'c2' });
    await call(socket, 'Remove', { Name: 'pgdata' });
    expect((await call(socket, 'List', {})).Volumes).toEqual([]);
    const freed = await execa('dmsetup', ['message', fx.poolName, '0', `delete ${thinId}`], { reject: false });
    expect(freed.stderr).toMatch(/No data available/);

    // A hand mount (stowage mount): a real mount, which a process still using it keeps, across a restart.
    const cli = (...words: string[]) => runCli(words, { env: { STOWAGE_SOCKET: socket }, timeoutMs: 90_000 });
    await call(socket, 'Create', { Name: 'handheld', Opts: { size: '96M' } });
    const held = await cli('mount', 'handheld');
    expect(held.exitCode, held.stderr).toBe(0);
    const handPath = held.stdout.trim();
    expect((await mountOf(handPath))?.fstype).toBe('ext4');
    const busy = await open(join(handPath, 'open-file'), 'w');
    const refused = await cli('umount', 'handheld');
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toMatch(/volume handheld cannot be unmounted from .*: a process still uses it/);
    expect((await cli('mounts')).stdout).toMatch(/handheld\s+stowage-hand-cli\s+1\s/);
    expect((await mountOf(handPath))?.fstype).toBe('ext4');
    await busy.close();
    await daemon.stop();
    daemon = await start();
    expect((await mountOf(handPath))?.fstype).toBe('ext4');
    expect((await cli('umount', 'handheld')).stdout.trim()).toBe('handheld');
    expect(await mountOf(handPath)).toBeUndefined();
    await call(socket, 'Remove', { Name: 'handheld' });
    await daemon.stop();
  });
});
