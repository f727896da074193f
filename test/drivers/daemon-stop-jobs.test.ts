/**
 * A graceful stop (SIGTERM) of a real daemon while jobs run: each is cancelled, its follower sees
 * it end as cancelled, the daemon waits for it to release its locks (and a restore to remove its
 * half-made volume) and exits 0; the next daemon finds no volume, no lock, and a repository that
 * verifies.
 */
import { randomBytes } from 'node:crypto';
import { open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobView } from '../../src/drivers/control/jobs.js';
import { callDaemon, followJob } from '../../src/drivers/cli/client.js';
import { controlEndpoints as api } from '../../src/drivers/control/endpoints.js';
import { assertCliBuilt, killAllDaemons, makeTempDir, removeTempDir, runCli, startDaemon, type DaemonHandle } from '../helpers/daemon-process.js';

const MiB = 2 ** 20;

describe('a graceful daemon stop with running jobs', () => {
  let dir: string;
  let socket: string;
  let daemon: DaemonHandle | undefined;
  let dest: string;
  let backupUrl: string;
  const start = async () => {
    daemon = await startDaemon(socket, ['--root', join(dir, 'root'), '--opt', `vfs.path=${join(dir, 'volumes')}`, '--docker-host', 'none']);
    return daemon;
  };
  const cli = async (...args: string[]) => {
    const result = await runCli(['--socket', socket, ...args], { timeoutMs: 300_000 });
    expect(result.exitCode, `stowage ${args.join(' ')}: ${result.stderr}`).toBe(0);
    return result.stdout;
  };

  /** Starts a job, follows it, and sends SIGTERM to the daemon at its first report of `phase`. */
  async function stopDuring(request: Parameters<typeof callDaemon<typeof api.startJob>>[2], phase: string): Promise<{ end: JobView; exit: number | undefined; log: string }> {
    const running = daemon!;
    const job = await callDaemon(socket, api.startJob, request);
    let signalled = false;
    const end = await followJob(socket, job.id, (p) => {
      if (p.phase === phase && !signalled) {
        signalled = true;
        process.kill(running.pid, 'SIGTERM');
      }
    });
    expect(signalled, `the job ended before reaching phase ${phase}: ${JSON.stringify(end)}`).toBe(true);
    const result = await running.exited;
    daemon = undefined;
    return { end, exit: result.exitCode, log: running.stderr() };
  }

  beforeAll(async () => {
    assertCliBuilt();
    dir = await makeTempDir('stowage-stop-jobs-');
    socket = join(dir, 'stowage.sock');
    dest = `vfs://${join(dir, 'backups')}`;
    await start();
    await cli('create', 'big');
    // Enough data that a job is still running when the signal lands (it is sent at the job's first report).
    // A vfs volume's data is the store's directory of that name.
    const file = await open(join(dir, 'volumes', 'big', 'data.bin'), 'w');
    for (let i = 0; i < 160; i += 1) await file.write(randomBytes(MiB));
    await file.close();
    backupUrl = (await cli('backup', 'create', 'big', '--dest', dest)).trim().split('\n').at(-1)!;
    expect(backupUrl).toMatch(/backup=/);
  }, 600_000);

  afterAll(async () => {
    await killAllDaemons();
    await removeTempDir(dir);
  });

  it('a restore is cancelled, its volume removed, and the daemon exits 0', async () => {
    const { end, exit, log } = await stopDuring({ kind: 'restore', name: 'copy', url: backupUrl }, 'restore');
    expect(end).toMatchObject({ kind: 'restore', state: 'failed', error: { code: 'E_CANCELLED' } });
    expect(end.error!.message).toMatch(/the daemon is stopping.*the volume was removed again/);
    expect(exit, log).toBe(0);
    expect(log).toMatch(/stopping 1 running job/);
    // Before the exit, not at the next start: the store holds no trace of it already.
    expect(await readdir(join(dir, 'volumes'))).not.toContain('copy');
    await start();
    expect(JSON.parse(await cli('list', '--json')).map((v: { name: string }) => v.name)).toEqual(['big']);
    expect(daemon!.stderr()).not.toMatch(/interrupted/);
  }, 600_000);

  it('a backup is cancelled, its repository lock released: the next backup and a verify pass', async () => {
    const { end, exit, log } = await stopDuring({ kind: 'backup-create', volume: 'big', dest }, 'backup');
    expect(end).toMatchObject({ kind: 'backup-create', state: 'failed', error: { code: 'E_CANCELLED' } });
    expect(exit, log).toBe(0);
    await start();
    const listed = JSON.parse(await cli('backup', 'list', '--dest', dest, '--json')) as { state: string; url: string }[];
    expect(listed.map((b) => [b.url, b.state])).toEqual([[backupUrl, 'complete']]);
    const next = (await cli('backup', 'create', 'big', '--dest', dest)).trim().split('\n').at(-1)!;
    expect(next).not.toBe(backupUrl);
    await cli('backup', 'verify', next);
  }, 600_000);

  it('a daemon with no running job stops without waiting for any', async () => {
    const running = daemon!;
    const result = await running.stop('SIGTERM');
    daemon = undefined;
    expect(result.exitCode).toBe(0);
    expect(running.stderr()).not.toMatch(/running job/);
  }, 120_000);
});
