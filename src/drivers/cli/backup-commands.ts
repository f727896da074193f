import { Option, type Command } from 'commander';
import { formatBackupUrl, parseBackupUrl } from '../../core/backup/backup-url.js';
import type { BackupDetail, BackupSummary, DeleteResult, VerifyResult } from '../../core/backup/service-contract.js';
import { ErrorCodes, StowageError, type ErrorCode } from '../../core/errors.js';
import type { CreateResult } from '../../core/volume-manager.js';
import { controlEndpoints as api, knownRemedies, type RequestOf } from '../control/endpoints.js';
import type { JobView } from '../control/jobs.js';
import { ControlError, callDaemon, followJob } from './client.js';
import { printJson, printTable } from './output.js';
import { describeProgress, formatBytes, progressView } from './progress.js';

type SocketOf = (cmd: Command) => string;

const KNOWN_CODES = new Set<string>(Object.values(ErrorCodes));

/** How to pick a job up again: said when the CLI stops following one that goes on. */
export function followHint(id: string): string {
  return `job ${id} goes on in the daemon; follow it again with "stowage job follow ${id}" (all jobs: "stowage job list")`;
}

/**
 * Follows job `id` to its end with a progress view, and answers the job as it ended; a failed
 * job fails the command with the job's error. Ctrl-C stops following, not the job.
 */
export async function followToEnd(socket: string, id: string, json: boolean): Promise<JobView> {
  const view = progressView(json);
  const detach = () => {
    view.stop();
    process.stderr.write(`\nstowage: detached: ${followHint(id)}\n`);
    process.exit(130);
  };
  process.once('SIGINT', detach);
  let end: JobView;
  try {
    end = await followJob(socket, id, (p) => view.update(p));
  } finally {
    view.stop();
    process.off('SIGINT', detach);
  }
  if (end.state === 'failed') {
    const code = end.error?.code;
    throw new ControlError(`job ${id} (${end.kind} ${end.target}) failed: ${end.error?.message ?? 'no reason given'}`, 'refused',
      code !== undefined && KNOWN_CODES.has(code) ? code as ErrorCode : undefined, knownRemedies(end.error?.remedies));
  }
  if (end.note && !json) process.stderr.write(`stowage: job ${id}: ${end.note}\n`);
  return end;
}

/** The repository part of a backup's URL; the URL itself if it does not parse (the backup is made: say something). */
function repositoryOf(url: string): string {
  try {
    return formatBackupUrl({ target: parseBackupUrl(url).target });
  } catch {
    return url;
  }
}

const counted = (n: number, noun: string) => `${n} ${noun}${n === 1 ? '' : 's'}`;

/** Warnings on stderr, so stdout's last line stays the answer scripts read. */
export function printWarnings(warnings: readonly string[], where: string): void {
  if (warnings.length === 0) return;
  process.stderr.write(`${warnings.length} warning(s), ${where}:\n${warnings.slice(0, 20).map((w) => `  ${w}\n`).join('')}` +
    (warnings.length > 20 ? `  ... and ${warnings.length - 20} more\n` : ''));
}

/** What a finished job prints: its answer's essential line, or with --json the answer itself. */
function printJobResult(end: JobView, json: boolean): void {
  if (json) {
    printJson(end.result ?? {});
    return;
  }
  switch (end.kind) {
    case 'backup-create': {
      const detail = end.result as BackupDetail;
      // What the backup left out (a FIFO, a file that vanished) is not in it: said where a user
      // looks, on stderr, so the URL stays alone on stdout's last line.
      printWarnings(detail.warnings ?? [], 'also in stowage backup inspect');
      if (detail.repositoryCreated) {
        // A mistyped --dest whose parent exists makes a new repository: said, so the user does not
        // look for this backup, or its dedup, in the repository they meant.
        process.stderr.write(`no backup repository was at ${repositoryOf(detail.url)}: this backup made a new one there\n`);
      }
      // The URL alone on the last line, for scripts: `url=$(stowage backup create ... | tail -n 1)`.
      process.stdout.write(`${detail.url}\n`);
      return;
    }
    case 'restore': {
      const { volume, warnings } = end.result as CreateResult;
      // Restored, but not all as the backup has it (an attribute the file system refused).
      printWarnings(warnings ?? [], "also in the daemon's log");
      process.stdout.write(`${volume.name}\n`);
      return;
    }
    case 'backup-verify': {
      const v = end.result as VerifyResult;
      const backups = v.backups !== undefined ? `${counted(v.backups, 'backup')}, ` : '';
      process.stdout.write(`${v.url}: ${backups}${counted(v.files, 'file')}, ${counted(v.chunks, 'chunk')}, ${formatBytes(v.bytes)} verified\n`);
      return;
    }
    case 'backup-delete': {
      const d = end.result as DeleteResult;
      // The URL first (scripts), then what the delete gave back: space is what a delete is for.
      const freed = d.notFreed !== undefined
        ? `deleted; nothing freed: ${d.notFreed}`
        : d.deletedPacks > 0 ? `deleted, ${formatBytes(d.freedBytes)} freed (${counted(d.deletedPacks, 'pack')})`
          : 'deleted, nothing freed (every pack it used also holds data other backups use)';
      process.stdout.write(`${d.url}: ${freed}\n`);
      return;
    }
  }
}

/** Starts a job, then follows it unless --detach, which prints the job's id instead. */
async function runJob(cmd: Command, socketOf: SocketOf, request: RequestOf<typeof api.startJob>, flags: { json?: boolean; detach?: boolean }): Promise<void> {
  const socket = socketOf(cmd);
  const started = await callDaemon(socket, api.startJob, request);
  if (flags.detach) {
    if (flags.json) printJson(started);
    else process.stdout.write(`${started.id}\n`);
    return;
  }
  printJobResult(await followToEnd(socket, started.id, Boolean(flags.json)), Boolean(flags.json));
}

/** `VOLUME` or `VOLUME/SNAPSHOT`, as Convoy writes a backup's source. */
export function parseSource(source: string): { volume: string; snapshot?: string } {
  const slash = source.indexOf('/');
  if (slash < 0) return { volume: source };
  const volume = source.slice(0, slash);
  const snapshot = source.slice(slash + 1);
  if (volume === '' || snapshot === '') {
    throw new StowageError(ErrorCodes.INVALID_REQUEST, `${JSON.stringify(source)}: give VOLUME, or VOLUME/SNAPSHOT with both names`);
  }
  return { volume, snapshot };
}

function printBackups(backups: BackupSummary[], json: boolean): void {
  if (json) {
    printJson(backups);
    return;
  }
  printTable([['URL', 'VOLUME', 'STATE', 'STARTED', 'KIND', 'FILES', 'SIZE', 'SNAPSHOT'], ...backups.map((b) => [
    b.state === 'unreadable' ? (b.key ?? b.url) : b.url, b.volume || '-', b.state, b.startedAt ?? '-', b.kind ?? '-',
    b.kind === 'block' ? '-' : b.stats ? String(b.stats.files) : '-', b.stats ? formatBytes(b.stats.bytes) : '-', b.snapshot ?? '-',
  ])]);
  // After the table, on stderr: what to do about each record that does not load.
  for (const b of backups) if (b.state === 'unreadable') process.stderr.write(`warning: ${b.problem ?? `${b.key} does not load`}\n`);
}

function printJobs(jobs: JobView[], json: boolean): void {
  if (json) {
    printJson(jobs);
    return;
  }
  printTable([['ID', 'KIND', 'TARGET', 'STATE', 'STARTED', 'PROGRESS'], ...jobs.map((j) => [
    j.id, j.kind, j.target, j.state, j.startedAt,
    j.state === 'failed' ? (j.error?.message ?? '-') : j.progress ? describeProgress(j.progress, 0).replace(/, 0 B\/s$/, '') : '-',
  ])]);
}

const JOB_FLAGS = [['--json', 'print the answer as JSON, no progress'], ['--detach', 'start the job, print its id and return']] as const;

/** --force only loosens --consistent's check of other nodes: alone it would read as a promise it does not keep. */
export const FORCE_WITHOUT_CONSISTENT = 'error: --force goes with --consistent (pause this node\'s containers although other nodes use the volume); without --consistent nothing is paused and nothing is forced';

export function addBackupCommands(program: Command, socketOf: SocketOf): void {
  const backup = program.command('backup').description('file-level backups of volumes into a repository (vfs:///path, s3://bucket@region/path)');
  const withJobFlags = (c: Command) => JOB_FLAGS.reduce((acc, [flag, text]) => acc.option(flag, text), c);

  withJobFlags(backup.command('create <source>')
    .description('back up VOLUME (devicemapper: through a fresh snapshot; vfs, glusterfs: its files read live) or VOLUME/SNAPSHOT; prints the backup\'s URL last')
    .requiredOption('--dest <url>', 'repository URL, e.g. vfs:///srv/backups')
    .option('--keep-snapshot', 'keep the snapshot taken for this backup')
    .option('--consistent', 'pause this node\'s containers using the volume while its snapshot is taken')
    .option('--force', 'with --consistent: although other nodes use the volume')
    .option('--no-xattrs', 'leave extended attributes out (file backups that read the volume; the backup notes it)')
    .addOption(new Option('--kind <kind>', 'file (the default: restores into any backend) or block (devicemapper: changed blocks only, restores into devicemapper)')
      .choices(['file', 'block'])))
    .action(async (source: string, flags: { dest: string; keepSnapshot?: boolean; consistent?: boolean; force?: boolean; xattrs: boolean; kind?: string; json?: boolean; detach?: boolean }, cmd: Command) => {
      if (flags.force && !flags.consistent) cmd.error(FORCE_WITHOUT_CONSISTENT);
      const { volume, snapshot } = parseSource(source);
      await runJob(cmd, socketOf, {
        kind: 'backup-create', volume, snapshot, dest: flags.dest, keepSnapshot: flags.keepSnapshot, consistent: flags.consistent, force: flags.force,
        ...(flags.kind !== undefined ? { backupKind: flags.kind as 'file' | 'block' } : {}),
        ...(flags.xattrs ? {} : { xattrs: false }),
      }, flags);
    });

  backup.command('list [dest]')
    .alias('ls')
    .description('the repository\'s backups, oldest first; those still being written show as in-progress')
    .option('--dest <url>', 'repository URL (or as the argument, Convoy\'s form)')
    .option('--volume <name>', 'only this volume\'s backups')
    .option('--json', 'print JSON')
    .action(async (given: string | undefined, flags: { dest?: string; volume?: string; json?: boolean }, cmd: Command) => {
      if (given !== undefined && flags.dest !== undefined && given !== flags.dest) {
        cmd.error(`error: two repositories: ${JSON.stringify(given)} and --dest ${JSON.stringify(flags.dest)}; give one`);
      }
      const dest = given ?? flags.dest;
      if (dest === undefined) cmd.error('error: which repository? give its URL: backup list --dest URL (or backup list URL)');
      printBackups((await callDaemon(socketOf(cmd), api.listBackups, { dest, volume: flags.volume })).backups, Boolean(flags.json));
    });

  backup.command('inspect <url>')
    .description('show one backup as JSON')
    .option('--json', 'print JSON (the default)')
    .action(async (url: string, _flags: object, cmd: Command) => printJson(await callDaemon(socketOf(cmd), api.inspectBackup, { url })));

  withJobFlags(backup.command('verify <url>')
    .description('read back and re-hash every chunk of a backup; given a repository URL (no backup named), of every backup in it, each chunk once'))
    .action(async (url: string, flags: { json?: boolean; detach?: boolean }, cmd: Command) => {
      await runJob(cmd, socketOf, { kind: 'backup-verify', url }, flags);
    });

  withJobFlags(backup.command('delete <url>')
    .alias('rm')
    .description('delete a backup and free what no other backup uses'))
    .action(async (url: string, flags: { json?: boolean; detach?: boolean }, cmd: Command) => {
      await runJob(cmd, socketOf, { kind: 'backup-delete', url }, flags);
    });

  const job = program.command('job').description('the daemon\'s long operations (backups, restores, verifies, deletes)');

  job.command('list')
    .alias('ls')
    .description('running jobs and those finished lately')
    .option('--json', 'print JSON')
    .action(async (flags: { json?: boolean }, cmd: Command) => {
      printJobs((await callDaemon(socketOf(cmd), api.listJobs, {})).jobs, Boolean(flags.json));
    });

  job.command('follow <id>')
    .description('show a job\'s progress until it ends, then its answer (Ctrl-C stops following, not the job)')
    .option('--json', 'print the answer as JSON, no progress')
    .action(async (id: string, flags: { json?: boolean }, cmd: Command) => {
      printJobResult(await followToEnd(socketOf(cmd), id, Boolean(flags.json)), Boolean(flags.json));
    });

  job.command('cancel <id>')
    .description('stop a running job at its next safe point')
    .option('--json', 'print JSON')
    .action(async (id: string, flags: { json?: boolean }, cmd: Command) => {
      const view = await callDaemon(socketOf(cmd), api.cancelJob, { id });
      if (flags.json) printJson(view);
      else if (view.state === 'running') process.stdout.write(`${id}: cancelled; it stops at its next safe point (stowage job follow ${id})\n`);
      else process.stdout.write(`${id}: already ended (${view.state}${view.error ? `: ${view.error.code}` : ''}); nothing to cancel\n`);
    });
}

/** `stowage create NAME --backup URL`: a restore, run as a job. */
export async function restoreVolume(cmd: Command, socketOf: SocketOf, name: string, url: string, options: Record<string, string>,
  flags: { json?: boolean; detach?: boolean }): Promise<void> {
  await runJob(cmd, socketOf, { kind: 'restore', name, url, options }, flags);
}
