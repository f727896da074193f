/**
 * The metrics endpoint and the log lines of a real `stowage daemon` process (vfs), after real
 * operations through the plugin socket and the CLI: values, not only names. `npm test` builds
 * dist/ first; run `npm run build` before running this file alone.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { createConnection, createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  assertCliBuilt, killAllDaemons, makeTempDir, removeTempDir, runCli, startDaemon, type DaemonHandle,
} from '../helpers/daemon-process.js';
import { scrapeMetrics, sample } from '../helpers/metrics-scrape.js';
import { pluginCall, socketRequest } from '../helpers/plugin-client.js';

const MiB = 1024 * 1024;

describe('stowage daemon --metrics (vfs)', () => {
  let dir: string;
  let socket: string;
  let metricsSocket: string;
  let daemon: DaemonHandle;
  const cli = (...args: string[]) => runCli(['--socket', socket, ...args], { timeoutMs: 60_000 });
  const scrape = () => scrapeMetrics(metricsSocket);
  const value = sample;

  beforeAll(async () => {
    assertCliBuilt();
    dir = await makeTempDir('stowage-met-');
    socket = join(dir, 's.sock');
    metricsSocket = join(dir, 'm.sock');
    // The settings come from the environment, as from systemd's EnvironmentFile or a plugin's env.
    daemon = await startDaemon(socket, ['--root', join(dir, 'root'), '--opt', `vfs.path=${join(dir, 'vols')}`, '--docker-host', 'none'], {
      env: { STOWAGE_METRICS: `unix:${metricsSocket}`, STOWAGE_LOG_LEVEL: 'debug', STOWAGE_NODE_ID: 'metrics-node-1' },
    });
  });

  afterAll(async () => {
    await killAllDaemons();
    await removeTempDir(dir);
  });

  it('serves only /metrics, with the default process metrics', async () => {
    const samples = await scrape();
    expect(value(samples, 'process_resident_memory_bytes')).toBeGreaterThan(10 * MiB);
    expect(value(samples, 'stowage_volumes')).toBe(0);
    expect((await socketRequest(metricsSocket, '/', undefined, { method: 'GET' })).status).toBe(404);
    expect((await socketRequest(metricsSocket, '/metrics', '', { method: 'POST' })).status).toBe(405);
  });

  it('shows this node alive, with its clock offset', async () => {
    const samples = await scrape();
    expect(value(samples, 'stowage_cluster_nodes{state="alive"}')).toBe(1);
    expect(value(samples, 'stowage_cluster_nodes{state="stale"}')).toBe(0);
    expect(Math.abs(value(samples, 'stowage_cluster_node_clock_offset_seconds{node="metrics-node-1"}'))).toBeLessThan(5);
  });

  it('counts creates and removes, and a failed remove under its error code', async () => {
    const before = await scrape();
    const count = (s: Map<string, number>, op: string) => s.get(`stowage_operation_duration_seconds_count{operation="${op}",backend="vfs"}`) ?? 0;
    for (const name of ['c1', 'c2', 'c3']) expect((await cli('create', name)).exitCode).toBe(0);
    expect((await cli('rm', 'c1')).exitCode).toBe(0);
    const missing = await cli('rm', 'never-made');
    expect(missing.exitCode).toBe(1);
    const after = await scrape();
    expect(count(after, 'create') - count(before, 'create')).toBe(3);
    expect(count(after, 'remove') - count(before, 'remove')).toBe(2);
    expect(value(after, 'stowage_operation_errors_total{operation="remove",code="E_VOLUME_NOT_FOUND"}')).toBe(1);
    expect(after.has('stowage_operation_errors_total{operation="create",code="E_VOLUME_NOT_FOUND"}')).toBe(false);
    expect(value(after, 'stowage_volumes')).toBe(2);
    // The histogram's buckets hold the same operations.
    expect(value(after, 'stowage_operation_duration_seconds_bucket{le="+Inf",operation="create",backend="vfs"}')).toBe(count(after, 'create'));
  });

  it('shows a volume written with 10 MiB as about 10 MiB used, within its size', async () => {
    expect((await cli('create', 'data', '--size', '64M')).exitCode).toBe(0);
    const mounted = await pluginCall(socket, 'Mount', { Name: 'data', ID: 'writer' });
    expect(mounted.Err).toBeUndefined();
    await writeFile(join(mounted.Mountpoint as string, 'blob'), randomBytes(10 * MiB));
    expect((await pluginCall(socket, 'Unmount', { Name: 'data', ID: 'writer' })).Err).toBeUndefined();
    const samples = await scrape();
    const used = value(samples, 'stowage_volume_used_bytes{volume="data"}');
    expect(used).toBeGreaterThanOrEqual(10 * MiB);
    expect(used).toBeLessThan(10.5 * MiB);
    expect(value(samples, 'stowage_volume_capacity_bytes{volume="data"}')).toBe(64 * MiB);
    const available = value(samples, 'stowage_volume_available_bytes{volume="data"}');
    expect(available).toBeLessThanOrEqual(64 * MiB - used);
    expect(available).toBeGreaterThan(0);
    // An empty volume shows (nearly) nothing used, and no gauge for a removed one.
    expect(value(samples, 'stowage_volume_used_bytes{volume="c2"}')).toBeLessThan(64 * 1024);
    expect(samples.has('stowage_volume_used_bytes{volume="c1"}')).toBe(false);
  });

  it('follows mounts and unmounts in the mounts gauges', async () => {
    const mounts = async () => {
      const s = await scrape();
      return [value(s, 'stowage_mounts'), value(s, 'stowage_mounted_volumes')];
    };
    expect(await mounts()).toEqual([0, 0]);
    expect((await pluginCall(socket, 'Mount', { Name: 'c2', ID: 'a' })).Err).toBeUndefined();
    expect((await pluginCall(socket, 'Mount', { Name: 'c2', ID: 'b' })).Err).toBeUndefined();
    expect((await pluginCall(socket, 'Mount', { Name: 'c3', ID: 'a' })).Err).toBeUndefined();
    expect(await mounts()).toEqual([3, 2]);
    expect((await pluginCall(socket, 'Unmount', { Name: 'c2', ID: 'a' })).Err).toBeUndefined();
    expect(await mounts()).toEqual([2, 2]);
    expect((await pluginCall(socket, 'Unmount', { Name: 'c2', ID: 'b' })).Err).toBeUndefined();
    expect((await pluginCall(socket, 'Unmount', { Name: 'c3', ID: 'a' })).Err).toBeUndefined();
    expect(await mounts()).toEqual([0, 0]);
    // A hand mount is a mount like a container's, and its operations are counted under their own names.
    expect((await cli('mount', 'c3')).exitCode).toBe(0);
    expect((await cli('mount', 'c3', '--id', 'bad label')).exitCode).toBe(1);
    expect(await mounts()).toEqual([1, 1]);
    expect((await cli('umount', 'c3')).exitCode).toBe(0);
    const after = await scrape();
    expect(await mounts()).toEqual([0, 0]);
    expect(value(after, 'stowage_operation_duration_seconds_count{operation="hand_mount",backend="vfs"}')).toBe(2);
    expect(value(after, 'stowage_operation_duration_seconds_count{operation="hand_unmount",backend="vfs"}')).toBe(1);
    expect(value(after, 'stowage_operation_errors_total{operation="hand_mount",code="E_INVALID_NAME"}')).toBe(1);
  });

  it('counts a backup and a restore with their bytes', async () => {
    const repo = `vfs://${join(dir, 'repo')}`;
    const made = await cli('backup', 'create', 'data', '--dest', repo, '--json');
    expect(made.exitCode, made.stderr).toBe(0);
    const url = (JSON.parse(made.stdout) as { url: string }).url;
    let samples = await scrape();
    expect(value(samples, 'stowage_backups_total{result="success"}')).toBe(1);
    expect(value(samples, 'stowage_backups_total{result="failure"}')).toBe(0);
    expect(value(samples, 'stowage_backup_bytes_total')).toBe(10 * MiB);
    // Random data does not compress: the repository grew by about as much.
    expect(value(samples, 'stowage_backup_stored_bytes_total')).toBeGreaterThanOrEqual(10 * MiB);
    expect(value(samples, 'stowage_operation_duration_seconds_count{operation="backup_create",backend="vfs"}')).toBe(1);

    const restored = await cli('create', 'copy', '--backup', url);
    expect(restored.exitCode, restored.stderr).toBe(0);
    const failed = await cli('create', 'copy2', '--backup', `${repo}?volume=data&backup=0000000000000000`);
    expect(failed.exitCode).not.toBe(0);
    samples = await scrape();
    expect(value(samples, 'stowage_restores_total{result="success"}')).toBe(1);
    expect(value(samples, 'stowage_restore_bytes_total')).toBe(10 * MiB);
    expect(value(samples, 'stowage_volume_used_bytes{volume="copy"}')).toBeGreaterThanOrEqual(10 * MiB);
  });

  it('logs JSON lines with the node on each, and the operation and volume on those of an operation', () => {
    const lines = daemon.stderr().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.length).toBeGreaterThan(5);
    for (const line of lines) expect(line).toMatchObject({ node: 'metrics-node-1', level: expect.any(String), time: expect.any(String) });
    expect(lines).toContainEqual(expect.objectContaining({ level: 'info', msg: 'created volume c1', operation: 'create', volume: 'c1' }));
    expect(lines).toContainEqual(expect.objectContaining({ level: 'debug', operation: 'remove', volume: 'never-made', code: 'E_VOLUME_NOT_FOUND' }));
    expect(lines).toContainEqual(expect.objectContaining({ msg: expect.stringMatching(/^metrics served on unix:/) }));
    expect(lines).toContainEqual(expect.objectContaining({ msg: expect.stringMatching(/^restored volume copy from/), operation: 'restore', volume: 'copy' }));
    expect(lines).toContainEqual(expect.objectContaining({ operation: 'backup_create', volume: 'data', job: expect.any(String) }));
  });
});

describe('stowage daemon --metrics flag', () => {
  it('refuses an address it cannot serve, saying what it expects, and starts nothing', async () => {
    const result = await runCli(['daemon', '--socket', '/nonexistent/s.sock', '--metrics', 'localhost']);
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toContain('expected HOST:PORT (e.g. 127.0.0.1:9468) or unix:/path');
    const level = await runCli(['daemon', '--socket', '/nonexistent/s.sock', '--log-level', 'loud']);
    expect(level.exitCode).toBe(1);
    expect(level.stderr).toMatch(/--log-level.*loud.*invalid/);
  });

  it('stops at start when the address cannot be served, leaving what sits there', async () => {
    const dir = await makeTempDir('stowage-metf-');
    try {
      await mkdir(join(dir, 'taken'));
      const result = await runCli(['daemon', '--socket', join(dir, 's.sock'), '--root', join(dir, 'root'), '--opt', `vfs.path=${join(dir, 'vols')}`,
        '--docker-host', 'none', '--metrics', `unix:${join(dir, 'taken')}`]);
      expect(result.exitCode).toBe(1);
      expect(result.stderr).toContain(`--metrics unix:${join(dir, 'taken')} cannot be served: listen EADDRINUSE`);
      const nowhere = await runCli(['daemon', '--socket', join(dir, 's.sock'), '--root', join(dir, 'root'), '--opt', `vfs.path=${join(dir, 'vols')}`,
        '--docker-host', 'none', '--metrics', `unix:${join(dir, 'no-dir', 'm.sock')}`]);
      expect(nowhere.exitCode).toBe(1);
      expect(nowhere.stderr).toContain(`--metrics unix:${join(dir, 'no-dir', 'm.sock')} cannot be served: the directory ${join(dir, 'no-dir')} does not exist`);
      expect((await stat(join(dir, 'taken'))).isDirectory()).toBe(true);
      await expect(stat(join(dir, 's.sock'))).rejects.toThrow(/ENOENT/);
    } finally {
      await removeTempDir(dir);
    }
  });

  it('never takes over a socket another program listens on (it was removed, and that program cut off)', async () => {
    const dir = await makeTempDir('stowage-metl-');
    // The daemon's probe connects and hangs up at once: the answer to it may meet a closed socket.
    const other = createServer((c) => { c.on('error', () => {}); c.end('other program\n'); });
    const path = join(dir, 'live.sock');
    await new Promise<void>((resolve) => other.listen(path, resolve));
    try {
      const result = await runCli(['daemon', '--socket', join(dir, 's.sock'), '--root', join(dir, 'root'), '--opt', `vfs.path=${join(dir, 'vols')}`,
        '--docker-host', 'none', '--metrics', `unix:${path}`]);
      expect(result.exitCode).toBe(1);
      expect(result.stderr).toContain(`--metrics unix:${path}: something already listens on that socket; choose another path`);
      const answer = await new Promise<string>((resolve, reject) => {
        const c = createConnection(path);
        let text = '';
        c.on('data', (d) => { text += String(d); }).on('end', () => resolve(text)).on('error', reject);
      });
      expect(answer).toBe('other program\n');
    } finally {
      await new Promise<void>((resolve) => other.close(() => resolve()));
      await removeTempDir(dir);
    }
  });
});
