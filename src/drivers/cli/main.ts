#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from 'commander';
import { VERSION } from '../../version.js';
import { parseKeyValuePairs } from '../../core/options.js';
import { controlEndpoints as api, type ControlEndpoint, type RequestOf, type ResponseOf } from '../control/endpoints.js';
import { DEFAULT_SOCKET } from '../server.js';
import { callDaemon } from './client.js';
import { failureJson, failureText, usageFailureJson } from './failure-output.js';
import { addDaemonCommand } from './daemon-command.js';
import { addInstallServiceCommand } from './install-service.js';
import { addDoctorCommand } from './doctor-command.js';
import { FORCE_WITHOUT_CONSISTENT, addBackupCommands, printWarnings, restoreVolume } from './backup-commands.js';
import { printJson, printList, printMounts, printNodes, printSnapshots, removalLine } from './output.js';
import { createUnnamed, unusedVolumeName } from './unnamed-volume.js';
import { ControlError } from './client.js';
import { ErrorCodes } from '../../core/errors.js';

const collect = (value: string, previous: string[]) => [...previous, value];

function socketOf(cmd: Command): string {
  return cmd.optsWithGlobals<{ socket: string }>().socket;
}

/** Set once the verb's own flags are parsed: a verb run with --json fails in JSON too. */
let jsonFailures = false;

/** The one error handler: every action's failure is one line on stderr (JSON under --json) and exit 1. */
function fail(err: unknown): never {
  process.stderr.write(jsonFailures ? `${JSON.stringify(failureJson(err))}\n` : `stowage: ${failureText(err)}\n`);
  process.exit(1);
}

function call<E extends ControlEndpoint>(cmd: Command, endpoint: E, body: RequestOf<E>): Promise<ResponseOf<E>> {
  return callDaemon(socketOf(cmd), endpoint, body);
}

const program = new Command('stowage')
  .description('Docker volumes on shared or thin-provisioned storage')
  .version(VERSION)
  .addOption(new Option('-s, --socket <path>', 'daemon socket').env('STOWAGE_SOCKET').default(DEFAULT_SOCKET))
  .showHelpAfterError()
  // Under --json, a command line refused inside a verb (two sizes, two names) is JSON too, without the help after it.
  .configureOutput({
    writeErr: (text) => { if (!jsonFailures) process.stderr.write(text); },
    outputError: (text, write) => jsonFailures ? process.stderr.write(`${JSON.stringify(usageFailureJson(text))}\n`) : write(text),
  })
  .hook('preAction', (_program, verb) => { jsonFailures = verb.opts<{ json?: unknown }>().json === true; });

addDaemonCommand(program, socketOf, fail);
addInstallServiceCommand(program, socketOf);
addDoctorCommand(program, socketOf);

program.command('create [name]')
  .description('create a volume; without a name, one is made (volume-<8 hex digits>) and printed')
  .option('--size <size>', 'size such as 10G', (value: string, previous: string | undefined) => {
    // commander keeps the last of a repeated flag: two sizes would create the volume with one unseen.
    if (previous !== undefined && previous !== value) throw new InvalidArgumentError(`--size is given twice, as ${previous} and ${value}: give one`);
    return value;
  })
  .option('--opt <key=value>', 'volume option: size, uid, gid, mode, adopt, or a backend\'s (repeatable)', collect, [])
  .option('--backup <url>', 'restore this backup into the new volume (a daemon job, with progress)', (url: string) => {
    if (url.trim() === '') throw new InvalidArgumentError('expected a backup URL, such as vfs:///srv/backups?volume=pg&backup=ID');
    return url;
  })
  .option('--detach', 'with --backup: start the restore, print its job id and return')
  .option('--json', 'print the answer as JSON')
  .action(async (given: string | undefined, flags: { size?: string; opt: string[]; backup?: string; detach?: boolean; json?: boolean }, cmd: Command) => {
    if (flags.detach && flags.backup === undefined) cmd.error('error: --detach goes with --backup (a restore runs as a job); a plain create answers once the volume is made');
    const options = parseKeyValuePairs(flags.opt, '--opt');
    if (flags.size !== undefined && options.size !== undefined && options.size !== flags.size) {
      cmd.error(`error: --size ${flags.size} and --opt size=${options.size} say two sizes; give one`);
    }
    if (flags.size !== undefined) options.size = flags.size;
    if (flags.backup !== undefined) {
      const target = given ?? await unusedVolumeName((name) => call(cmd, api.inspect, { name }).then(() => true, (err: unknown) => {
        if (err instanceof ControlError && err.code === ErrorCodes.VOLUME_NOT_FOUND) return false;
        throw err;
      }));
      await restoreVolume(cmd, socketOf, target, flags.backup, options, flags);
      return;
    }
    const { name, result } = given !== undefined
      ? { name: given, result: await call(cmd, api.create, { name: given, options }) }
      : await createUnnamed((name) => call(cmd, api.create, { name, options }));
    if (flags.json) printJson(result);
    else process.stdout.write(`${name}${result.created ? '' : ' (already existed with the same options)'}\n`);
  });

program.command('delete <name>')
  .alias('rm')
  .description('delete a volume and, unless --keep-data, its data')
  .option('--keep-data', 'retain the data: move it aside instead of deleting it')
  .option('-r, --reference', 'the same as --keep-data (Convoy\'s name: stop managing the volume, keep its data)')
  .option('--force', 'delete although stopped nodes, or containers that do not run, still reference the volume (never while a live node mounts it)')
  .option('--json', 'print the answer as JSON')
  .action(async (name: string, flags: { keepData?: boolean; reference?: boolean; force?: boolean; json?: boolean }, cmd: Command) => {
    const result = await call(cmd, api.remove, { name, retain: flags.keepData || flags.reference, force: flags.force });
    if (flags.json) printJson(result);
    else process.stdout.write(`${removalLine(name, result)}\n`);
  });

program.command('list')
  .alias('ls')
  .description('list volumes')
  .option('--json', 'print JSON')
  .action(async (flags: { json?: boolean }, cmd: Command) => {
    printList((await call(cmd, api.list, {})).volumes, Boolean(flags.json));
  });

program.command('inspect <name>')
  .description('show one volume as JSON')
  .option('--json', 'print JSON (the default)')
  .action(async (name: string, _flags: object, cmd: Command) => printJson(await call(cmd, api.inspect, { name })));

program.command('info')
  .description('show the daemon\'s node, backend and settings')
  .option('--json', 'print JSON (the default)')
  .action(async (_flags: object, cmd: Command) => printJson(await call(cmd, api.info, {})));

const snapshot = program.command('snapshot').description('point-in-time copies of a volume (backends that can: vfs, glusterfs, devicemapper)');

snapshot.command('create <volume> [name]')
  .description('snapshot a volume (the name defaults to snap-YYYYMMDD-HHMMSS, in UTC)')
  .option('--consistent', 'pause this node\'s containers using the volume while the snapshot is taken')
  .option('--force', 'with --consistent: although other nodes use the volume')
  .option('--no-xattrs', 'leave extended attributes out (vfs, glusterfs: reading them costs seconds per 10 000 files on GlusterFS)')
  .option('--name <name>', 'the snapshot\'s name, as Convoy took it (the same as the second argument)')
  .option('--json', 'print JSON')
  .action(async (volume: string, given: string | undefined, flags: { consistent?: boolean; force?: boolean; xattrs: boolean; name?: string; json?: boolean }, cmd: Command) => {
    if (flags.force && !flags.consistent) cmd.error(FORCE_WITHOUT_CONSISTENT);
    if (given !== undefined && flags.name !== undefined && given !== flags.name) {
      cmd.error(`error: two names for one snapshot: ${JSON.stringify(given)} and --name ${JSON.stringify(flags.name)}; give one`);
    }
    const name = given ?? flags.name;
    // No time limit: on vfs a snapshot copies the volume's files, which takes as long as it takes.
    const record = await callDaemon(socketOf(cmd), api.createSnapshot, {
      volume, name, consistent: flags.consistent, force: flags.force, ...(flags.xattrs ? {} : { xattrs: false }),
    }, { timeoutMs: 0 });
    if (flags.json) printJson(record);
    else {
      process.stdout.write(`${record.volume}/${record.name}\n`);
      printWarnings(record.warnings ?? [], "also in the daemon's log");
    }
  });

snapshot.command('list <volume>')
  .alias('ls')
  .description('list a volume\'s snapshots, oldest first')
  .option('--json', 'print JSON')
  .action(async (volume: string, flags: { json?: boolean }, cmd: Command) => {
    printSnapshots((await call(cmd, api.listSnapshots, { volume })).snapshots, Boolean(flags.json));
  });

/**
 * Convoy named a snapshot alone (`snapshot delete SNAP`); here a snapshot is named within its
 * volume. One name is refused with the form to use, not taken as a volume.
 */
function snapshotNamed(cmd: Command, verb: string, volume: string, name: string | undefined): string {
  if (name === undefined) {
    cmd.error(`error: a snapshot is named within its volume: stowage snapshot ${verb} VOLUME NAME (stowage snapshot list VOLUME lists a volume's snapshots; ${JSON.stringify(volume)} was taken as the volume)`);
  }
  return name;
}

snapshot.command('inspect <volume> [name]')
  .description('show one snapshot as JSON')
  .option('--json', 'print JSON (the default)')
  .action(async (volume: string, given: string | undefined, _flags: object, cmd: Command) => {
    printJson(await call(cmd, api.inspectSnapshot, { volume, name: snapshotNamed(cmd, 'inspect', volume, given) }));
  });

snapshot.command('delete <volume> [name]')
  .alias('rm')
  .description('delete a snapshot')
  .option('--json', 'print JSON')
  .action(async (volume: string, given: string | undefined, flags: { json?: boolean }, cmd: Command) => {
    const name = snapshotNamed(cmd, 'delete', volume, given);
    await call(cmd, api.deleteSnapshot, { volume, name });
    if (flags.json) printJson({ volume, name });
    else process.stdout.write(`${volume}/${name}\n`);
  });

addBackupCommands(program, socketOf);

program.command('mounts')
  .description('this node\'s mount records: volume, mount id, count, since')
  .option('--json', 'print JSON')
  .action(async (flags: { json?: boolean }, cmd: Command) => {
    printMounts((await call(cmd, api.mounts, {})).mounts, Boolean(flags.json));
  });

program.command('release <volume> [id]')
  .description('drop this node\'s mount records of a volume (or one mount id), detaching it when none remain')
  .option('--force', 'even though the Docker engine shows a running container using the volume')
  .option('--json', 'print JSON')
  .action(async (volume: string, id: string | undefined, flags: { force?: boolean; json?: boolean }, cmd: Command) => {
    const { released } = await call(cmd, api.release, { name: volume, id, force: flags.force });
    if (flags.json) printJson(released);
    else for (const m of released) process.stdout.write(`${m.volume} ${m.id} (${m.count})\n`);
  });

/** An empty --id would reach the daemon as a missing field: said here, in the flag's terms. */
function handLabel(value: string): string {
  if (value === '') throw new InvalidArgumentError('expected a label: letters, digits, "_", "." and "-", starting with a letter or digit');
  return value;
}

program.command('mount <volume>')
  .description('mount a volume on this node for your own use and print its path; it stays mounted, across daemon restarts, until "stowage umount"')
  .option('--id <label>', 'hold the mount under this label, so that several holders mount and unmount independently (default: cli)', handLabel)
  .option('--json', 'print JSON')
  .action(async (volume: string, flags: { id?: string; json?: boolean }, cmd: Command) => {
    const mounted = await call(cmd, api.mountByHand, { name: volume, label: flags.id });
    if (flags.json) printJson(mounted);
    else process.stdout.write(`${mounted.mountpoint}\n`);
  });

program.command('umount <volume>')
  .alias('unmount')
  .description('end a mount made with "stowage mount", detaching the volume when nothing else mounts it here')
  .option('--id <label>', 'the label the mount was made under (default: cli)', handLabel)
  .option('--json', 'print JSON')
  .action(async (volume: string, flags: { id?: string; json?: boolean }, cmd: Command) => {
    const result = await call(cmd, api.unmountByHand, { name: volume, label: flags.id });
    if (flags.json) printJson(result);
    else process.stdout.write(`${volume}${result.remaining > 0 ? ` (still mounted ${result.remaining} time(s) on this node)` : ''}\n`);
  });

const node = program.command('node').description('nodes sharing the storage of a global backend');

node.command('list')
  .alias('ls')
  .description('list nodes with last heartbeat, clock offset and version')
  .option('--json', 'print JSON')
  .action(async (flags: { json?: boolean }, cmd: Command) => {
    const answer = await call(cmd, api.nodes, {});
    printNodes(answer.nodes, answer.invalid ?? [], Boolean(flags.json));
  });

node.command('forget <node>')
  .description('drop a node that is gone for good, with its references')
  .option('--json', 'print JSON')
  .action(async (nodeId: string, flags: { json?: boolean }, cmd: Command) => {
    await call(cmd, api.forgetNode, { node: nodeId });
    if (flags.json) printJson({ node: nodeId });
    else process.stdout.write(`${nodeId}\n`);
  });

// A reader that stopped early (`stowage ls | head`) closes the pipe: the output is not wanted, nothing failed.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
}
await program.parseAsync(process.argv).catch(fail);
