/**
 * The daemon's jobs over the real socket server (control API + JobRegistry) and the built CLI,
 * with a recording BackupService: a job outlives its follower, followers come and go, bad
 * requests fail as requests, finished jobs are forgotten, and the CLI's output suits scripts.
 * The real backup service is exercised end to end in test/e2e/backup-docker.test.ts.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { JobProgress } from '../../src/core/backup/service-contract.js';
import { ErrorCodes, StowageError } from '../../src/core/errors.js';
import { silentLogger } from '../../src/core/logger.js';
import { ControlError, callDaemon, followJob } from '../../src/drivers/cli/client.js';
import { CONTROL_PREFIX, controlEndpoints as api } from '../../src/drivers/control/endpoints.js';
import { JobRegistry } from '../../src/drivers/control/jobs.js';
import { generatedSnapshotName } from '../../src/drivers/control/routes.js';
import { CLI_PATH, assertCliBuilt, cleanEnv, runCli } from '../helpers/daemon-process.js';
import { pluginServerForSuite } from '../helpers/plugin-server.js';
import { RecordingBackupService, backupServiceModule } from '../helpers/recording-backup-service.js';

const DEST = 'vfs:///srv/backups';
const steps: JobProgress[] = [
  { phase: 'backup', files: 1, bytes: 100, totalFiles: 3, totalBytes: 300 },
  { phase: 'backup', files: 3, bytes: 300, totalFiles: 3, totalBytes: 300 },
];

function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => { open = resolve; });
  return { promise, open };
}

describe('daemon jobs', () => {
  const service = new RecordingBackupService();
  const srv = pluginServerForSuite('stowage-jobs-', {}, backupServiceModule(service));
  const cli = (...args: string[]) => runCli(['--socket', srv().socket, ...args]);

  beforeAll(async () => {
    assertCliBuilt();
    await srv().manager.create('data', {});
  });
  beforeEach(() => {
    service.script = { progress: steps };
  });

  it('runs a backup as a job whose follower gets the progress, then the backup', async () => {
    const g = gate();
    service.script = { progress: steps, gate: g.promise };
    const started = await callDaemon(srv().socket, api.startJob, { kind: 'backup-create', volume: 'data', dest: DEST, snapshot: 'before' });
    expect(started).toMatchObject({ kind: 'backup-create', target: 'data', state: 'running' });
    const seen: JobProgress[] = [];
    const end = await followJob(srv().socket, started.id, (p) => {
      seen.push(p);
      g.open();
    });
    expect(end.state).toBe('succeeded');
    expect(end.result).toMatchObject({ volume: 'data', snapshot: 'before', url: expect.stringContaining('volume=data') });
    // Progress lines are thinned to a few a second, never reordered: the last one is the latest.
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.at(-1)).toEqual(steps.at(-1));
    expect(service.calls.at(-1)).toEqual({ op: 'createBackup', args: ['data', { dest: DEST, snapshot: 'before', keepSnapshot: undefined }] });
    // Following a finished job answers its end at once, as many times as asked.
    expect((await followJob(srv().socket, started.id, () => {})).result).toEqual(end.result);
  });

  it('goes on when its follower goes away, and can be followed again', async () => {
    const g = gate();
    service.script = { progress: steps, gate: g.promise };
    const started = await callDaemon(srv().socket, api.startJob, { kind: 'backup-verify', url: await backupUrl() });
    // A follower that reads the first line, then hangs up.
    await new Promise<void>((resolve, reject) => {
      const req = request({ socketPath: srv().socket, path: `${CONTROL_PREFIX}${api.followJob.path}`, method: 'POST',
        headers: { 'content-type': 'application/json' } }, (res) => {
        res.once('data', (line: Buffer) => {
          expect(JSON.parse(line.toString('utf8'))).toMatchObject({ type: 'progress' });
          req.destroy();
          resolve();
        });
      });
      req.on('error', reject);
      req.end(JSON.stringify({ id: started.id }));
    });
    expect((await callDaemon(srv().socket, api.inspectJob, { id: started.id })).state).toBe('running');
    const listed = (await callDaemon(srv().socket, api.listJobs, {})).jobs.find((j) => j.id === started.id);
    expect(listed).toMatchObject({ state: 'running', progress: steps.at(-1) });
    g.open();
    const end = await followJob(srv().socket, started.id, () => {});
    expect(end).toMatchObject({ state: 'succeeded', result: { files: 3, chunks: 4, bytes: 5 } });
  });

  it('reports a failed job with its error code, and the CLI fails with it', async () => {
    service.script = { progress: [], fail: new StowageError(ErrorCodes.BACKUP_CORRUPT, 'chunk 1234abcd is corrupt') };
    const url = await backupUrl();
    const started = await callDaemon(srv().socket, api.startJob, { kind: 'backup-verify', url });
    const end = await followJob(srv().socket, started.id, () => {});
    expect(end).toMatchObject({ state: 'failed', error: { code: ErrorCodes.BACKUP_CORRUPT, message: 'chunk 1234abcd is corrupt' } });
    const run = await cli('backup', 'verify', url);
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toContain('chunk 1234abcd is corrupt');
    expect(run.stdout).toBe('');
  });

  it('words a failed job\'s remedies for the CLI, as for any refused request', async () => {
    service.script = {
      progress: [],
      fail: new StowageError(ErrorCodes.NOT_SUPPORTED, 'volume data is on the vfs backend', { volume: 'data', remedies: [{ action: 'file-backup', volume: 'data' }] }),
    };
    const started = await callDaemon(srv().socket, api.startJob, { kind: 'backup-create', volume: 'data', dest: DEST });
    const end = await followJob(srv().socket, started.id, () => {});
    expect(end.error).toEqual({ code: ErrorCodes.NOT_SUPPORTED, message: 'volume data is on the vfs backend', remedies: [{ action: 'file-backup', volume: 'data' }] });
    const run = await cli('backup', 'create', 'data', '--dest', DEST);
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toMatch(/volume data is on the vfs backend; make one with "stowage backup create data --kind file --dest URL"/);
  });

  it('refuses a bad request before starting anything', async () => {
    const before = (await callDaemon(srv().socket, api.listJobs, {})).jobs.length;
    const calls = service.calls.length;
    const refusal = async (call: Promise<unknown>) => call.then(() => undefined, (e: unknown) => e as ControlError);
    // @ts-expect-error an unknown kind of job
    expect(await refusal(callDaemon(srv().socket, api.startJob, { kind: 'format-disk', volume: 'data' })))
      .toMatchObject({ code: ErrorCodes.INVALID_REQUEST, message: expect.stringContaining('"kind"') });
    expect(await refusal(callDaemon(srv().socket, api.startJob, { kind: 'restore', name: '../etc', url: await backupUrl() })))
      .toMatchObject({ code: ErrorCodes.INVALID_NAME });
    for (const options of ['size=1G', ['size=1G'], null]) {
      // @ts-expect-error options that are not an object of names and values
      expect(await refusal(callDaemon(srv().socket, api.startJob, { kind: 'restore', name: 'copy', url: await backupUrl(), options })))
        .toMatchObject({ code: ErrorCodes.INVALID_REQUEST, message: expect.stringContaining('"options" must be an object') });
    }
    expect(await refusal(callDaemon(srv().socket, api.startJob, { kind: 'backup-create', volume: 'nope', dest: DEST })))
      .toMatchObject({ code: ErrorCodes.VOLUME_NOT_FOUND });
    // A destination the service refuses is a refused request, not a job that fails.
    expect(await refusal(callDaemon(srv().socket, api.startJob, { kind: 'backup-create', volume: 'data', dest: 'ftp://x' })))
      .toMatchObject({ code: ErrorCodes.INVALID_REQUEST, message: expect.stringContaining('not a repository URL') });
    expect(await refusal(callDaemon(srv().socket, api.startJob, { kind: 'backup-delete', url: `${DEST}?volume=data&backup=zzz` })))
      .toMatchObject({ code: ErrorCodes.BACKUP_NOT_FOUND });
    expect(await refusal(callDaemon(srv().socket, api.startJob, { kind: 'backup-delete', url: 'vfs:///srv/own-storage/.stowage/snapshots?volume=data&backup=zzz' })))
      .toMatchObject({ code: ErrorCodes.INVALID_REQUEST, message: expect.stringContaining("inside stowage's own storage") });
    expect(await refusal(followJob(srv().socket, 'ffffffffffff', () => {}))).toMatchObject({ kind: 'refused', code: ErrorCodes.INVALID_REQUEST });
    expect((await callDaemon(srv().socket, api.listJobs, {})).jobs.length).toBe(before);
    expect(service.calls.slice(calls).filter((c) => !['inspectBackup', 'createBackup', 'checkRequest', 'checkDelete'].includes(c.op))).toEqual([]);
    expect(service.calls.slice(calls).some((c) => c.op === 'createBackup')).toBe(true); // only backupUrl()'s own
  });

  it('prints the backup URL alone on the last line, progress lines on stderr when not a terminal, and JSON with --json', async () => {
    // The job waits until the CLI showed its first progress line, so that there is one to show.
    const g = gate();
    service.script = { progress: steps, gate: g.promise };
    const child = execa('node', [CLI_PATH, '--socket', srv().socket, 'backup', 'create', 'data/snap1', '--dest', DEST], {
      reject: false, env: cleanEnv(), extendEnv: false, stdin: 'ignore', buffer: true,
    });
    child.stderr.once('data', () => g.open());
    const run = await child;
    expect(run.exitCode).toBe(0);
    expect(run.stdout).not.toContain('files');
    const lines = String(run.stdout).trimEnd().split('\n');
    expect(lines.at(-1)).toMatch(/^vfs:\/\/\/srv\/backups\?volume=data&backup=b\d+$/);
    expect(run.stderr).toMatch(/^backup \d\/3 files, [\d.]+ B\/300 B/m);
    expect(service.calls.at(-1)?.args).toEqual(['data', { dest: DEST, snapshot: 'snap1', keepSnapshot: undefined }]);

    const json = await cli('backup', 'create', 'data', '--dest', DEST, '--keep-snapshot', '--json');
    expect(json.stderr).toBe('');
    expect(JSON.parse(json.stdout)).toMatchObject({ volume: 'data', state: 'complete' });
    expect(service.calls.at(-1)?.args).toEqual(['data', { dest: DEST, snapshot: undefined, keepSnapshot: true }]);

    const listed = await cli('backup', 'list', '--dest', DEST, '--volume', 'data', '--json');
    expect((JSON.parse(listed.stdout) as { url: string }[]).map((b) => b.url)).toContain(lines.at(-1));
    const restore = await cli('create', 'copy', '--backup', lines.at(-1)!, '--opt', 'size=1M', '--json');
    expect(JSON.parse(restore.stdout)).toMatchObject({ created: true, volume: { name: 'copy' } });
    expect(service.calls.at(-1)).toEqual({ op: 'restoreVolume', args: ['copy', lines.at(-1), { size: '1M' }] });

    // What a backup left out is said on stderr; the URL stays alone on stdout's last line.
    service.script = { progress: [], warnings: ['fifo: FIFO skipped', 'gone.txt: vanished while it was read, left out'] };
    const warned = await cli('backup', 'create', 'data', '--dest', DEST);
    expect(warned.stdout.trim().split('\n').at(-1)).toMatch(/^vfs:\/\/\/srv\/backups\?volume=data&backup=b\d+$/);
    expect(warned.stderr).toContain('2 warning(s), also in stowage backup inspect:\n  fifo: FIFO skipped\n  gone.txt: vanished while it was read, left out');
    expect(warned.stderr).not.toContain('new one');

    // A destination with no repository (a mistyped --dest) is said to have been made by this backup.
    service.script = { progress: [], repositoryCreated: true };
    const made = await cli('backup', 'create', 'data', '--dest', DEST);
    expect(made.stdout.trim().split('\n').at(-1)).toMatch(/^vfs:\/\/\/srv\/backups\?volume=data&backup=b\d+$/);
    // (This fake's backup ids are not real ones, so the CLI names the whole URL it got.)
    expect(made.stderr).toMatch(/^no backup repository was at vfs:\/\/\/srv\/backups\S*: this backup made a new one there$/m);
  });

  it('detaches on Ctrl-C, saying how to follow again, and the job goes on', async () => {
    const g = gate();
    service.script = { progress: steps, gate: g.promise };
    const child = execa('node', [CLI_PATH, '--socket', srv().socket, 'backup', 'delete', await backupUrl()], {
      reject: false, env: cleanEnv(), extendEnv: false, stdin: 'ignore', buffer: true,
    });
    // Started once it printed its first progress line.
    await new Promise<void>((resolve) => child.stderr.once('data', () => resolve()));
    child.kill('SIGINT');
    const result = await child;
    expect(result.exitCode).toBe(130);
    const id = /stowage job follow ([0-9a-f]{12})/.exec(String(result.stderr))?.[1];
    expect(id).toBeDefined();
    expect((await callDaemon(srv().socket, api.inspectJob, { id: id! })).state).toBe('running');
    g.open();
    const again = await cli('job', 'follow', id!);
    expect(again.exitCode).toBe(0);
    // The delete's answer: the URL, then what it freed.
    expect(again.stdout.trim()).toMatch(/^vfs:\/\/\/srv\/backups\?volume=data&backup=b\d+: deleted, 3\.0 MiB freed \(2 packs\)$/);
    const jobs = await cli('job', 'list', '--json');
    expect(JSON.parse(jobs.stdout)).toEqual(expect.arrayContaining([expect.objectContaining({ id, kind: 'backup-delete', state: 'succeeded' })]));
  });

  it('says whether job cancel stopped a running job or found it ended already', async () => {
    const g = gate();
    service.script = { progress: steps, gate: g.promise };
    const started = await cli('backup', 'delete', await backupUrl(), '--detach');
    const id = started.stdout.trim();
    expect(id).toMatch(/^[0-9a-f]{12}$/);
    const first = await cli('job', 'cancel', id);
    expect(first.stdout).toBe(`${id}: cancelled; it stops at its next safe point (stowage job follow ${id})`);
    g.open();
    await cli('job', 'follow', id);
    const second = await cli('job', 'cancel', id);
    expect(second.exitCode).toBe(0);
    expect(second.stdout).toMatch(new RegExp(`^${id}: already ended \\((succeeded|failed: E_[A-Z_]+)\\); nothing to cancel$`));
  });

  it('names a snapshot after the time when no name is given', () => {
    expect(generatedSnapshotName(new Date('2026-03-04T05:06:07.890Z'))).toBe('snap-20260304-050607');
  });

  async function backupUrl(): Promise<string> {
    const saved = service.script;
    service.script = { progress: [] };
    const detail = await service.createBackup('data', { dest: DEST });
    service.script = saved;
    return detail.url;
  }
});

describe('following a job', () => {
  it('names the job to follow again when the daemon hangs up before its first line', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'stowage-follow-'));
    const socket = join(dir, 'gone.sock');
    // A daemon killed right after accepting the follow: the connection closes with no answer.
    const server = createServer((conn) => conn.once('data', () => conn.destroy()));
    await new Promise<void>((resolve) => server.listen(socket, resolve));
    try {
      const failure = await followJob(socket, 'abcdefabcdef', () => {}).then(() => new Error('followed'), (err: unknown) => err as Error);
      expect(failure).toBeInstanceOf(ControlError);
      expect(failure.message).toContain('broke while following job abcdefabcdef; the job may still be running ("stowage job follow abcdefabcdef")');
    } finally {
      await new Promise((resolve) => server.close(resolve));
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('the job registry', () => {
  it('forgets finished jobs after a while and beyond a count, never running ones', async () => {
    let now = 0;
    const jobs = new JobRegistry(silentLogger, { keepFinishedMs: 1000, maxFinished: 2, maxRunning: 4, now: () => now });
    const g = gate();
    const running = jobs.start('restore', 'slow', () => g.promise);
    const done = [1, 2, 3].map((n) => jobs.start('backup-verify', `u${n}`, async () => n));
    await new Promise((r) => setTimeout(r, 10));
    now = 500;
    // Only two finished jobs are kept: the oldest went.
    expect(jobs.list().map((j) => j.target)).toEqual(['slow', 'u2', 'u3']);
    expect(() => jobs.get(done[0]!.id)).toThrow(/no job/);
    // The daemon's own start is named: a job id from before a restart is not a typo.
    expect(() => jobs.get('abcdefabcdef')).toThrow("(started at 1970-01-01T00:00:00.000Z) ended with it");
    now = 2000;
    expect(jobs.list().map((j) => j.target)).toEqual(['slow']);
    // Four running at once at most: a fifth is refused, saying why, and starts once some ended.
    const more = ['slow2', 'slow3', 'slow4'].map((target) => jobs.start('restore', target, () => g.promise));
    expect(() => jobs.start('backup-verify', 'u4', async () => 4)).toThrow(/4 jobs are running, as many as this daemon runs at once/);
    expect(jobs.list().map((j) => j.target)).toEqual(['slow', 'slow2', 'slow3', 'slow4']);
    g.open();
    await new Promise((r) => setTimeout(r, 10));
    expect(jobs.get(running.id).state).toBe('succeeded');
    expect(more.map((j) => jobs.get(j.id).state)).toEqual(['succeeded', 'succeeded', 'succeeded']);
    expect(jobs.start('backup-verify', 'u4', async () => 4).state).toBe('running');
  });

  it('keeps the jobs that finished last: a long one that just ended outlives quick ones started after it', async () => {
    let now = 0;
    const jobs = new JobRegistry(silentLogger, { keepFinishedMs: 60_000, maxFinished: 2, maxRunning: 8, now: () => now });
    const g = gate();
    const long = jobs.start('restore', 'long', () => g.promise);
    for (const n of [1, 2, 3]) {
      now += 10;
      jobs.start('backup-verify', `quick${n}`, async () => n);
      await new Promise((r) => setTimeout(r, 5));
    }
    now += 10;
    g.open();
    await new Promise((r) => setTimeout(r, 10));
    expect(jobs.list().map((j) => j.target)).toEqual(['long', 'quick3']);
    expect(jobs.get(long.id).state).toBe('succeeded');
  });

  it('says so when a cancel came too late to stop a job that then finished', async () => {
    const jobs = new JobRegistry(silentLogger);
    const g = gate();
    // Past its last safe point: it finishes whatever the signal says.
    const started = jobs.start('backup-delete', 'url', () => g.promise);
    jobs.cancel(started.id);
    g.open();
    await new Promise((r) => setTimeout(r, 10));
    expect(jobs.get(started.id)).toMatchObject({ state: 'succeeded', note: 'cancelled too late: it had passed the point where it could stop, and finished' });
  });

  it('cancels a running job through its signal', async () => {
    const jobs = new JobRegistry(silentLogger);
    // As the backup service does: at its next safe point it throws the signal's reason.
    const started = jobs.start('backup-create', 'v', ({ signal }) => new Promise((_, reject) => {
      if (signal.aborted) reject(signal.reason);
      signal.addEventListener('abort', () => reject(signal.reason));
    }));
    const ended = new Promise((resolve) => jobs.follow(started.id, (e) => e.type === 'end' && resolve(e.job)));
    jobs.cancel(started.id);
    expect(await ended).toMatchObject({ state: 'failed', error: { code: ErrorCodes.CANCELLED, message: `job ${started.id} was cancelled` } });
  });
});
