#!/usr/bin/env node
import { Command, Option } from 'commander';
import { VERSION } from '../../version.js';
import { isStowageError } from '../../core/errors.js';
import { parseKeyValuePairs } from '../../core/options.js';
import { DEFAULT_SOCKET } from '../server.js';
import { ControlError, callDaemon } from './client.js';
import { startDaemon, type DaemonFlags } from './daemon.js';
import type { InvalidNodeRecord, NodeView } from '../../core/cluster/node-record.js';
import type { MountRecordView } from '../../core/mount-table.js';
import type { SnapshotRecord } from '../../core/backend.js';
import { printInfo, printList, printMounts, printNodes, printSnapshots, printVolume } from './output.js';

const collect = (value: string, previous: string[]) => [...previous, value];

function socketOf(cmd: Command): string {
  const opts = cmd.optsWithGlobals<{ socket?: string }>();
  return opts.socket ?? process.env.STOWAGE_SOCKET ?? DEFAULT_SOCKET;
}

function fail(err: unknown): never {
  const message = err instanceof ControlError || isStowageError(err) ? err.message : String((err as Error)?.message ?? err);
  process.stderr.write(`stowage: ${message}\n`);
  process.exit(1);
}

const program = new Command('stowage')
  .description('Docker volumes on shared or thin-provisioned storage')
  .version(VERSION)
  .option('--socket <path>', `daemon socket (default: $STOWAGE_SOCKET or ${DEFAULT_SOCKET})`)
  .showHelpAfterError();

program.command('daemon')
  .description('run the daemon: Docker volume plugin and control API on one unix socket')
  .option('--backend <name>', 'storage backend', undefined)
  .addOption(new Option('--drivers <name>', 'alias of --backend (Convoy)').hideHelp(false))
  .option('--opt <key=value>', 'backend option, e.g. vfs.path=/mnt/nfs (repeatable)', collect, [])
  .option('--driver-opts <key=value>', 'alias of --opt (Convoy)', collect, [])
  .option('--root <dir>', 'node-local state directory', '/var/lib/stowage')
  .option('--node-id <name>', 'this node\'s id (default: the host name)')
  .option('--on-remove <policy>', 'what volume removal does with data: delete or retain', 'delete')
  .option('--docker-host <unix://path>', 'local Docker engine, to learn which containers use volumes (default: unix:///var/run/docker.sock when present; "none" to disable)')
  .option('--heartbeat-interval <seconds>', 'how often this node publishes itself on shared storage', '5')
  .option('--stale-after <seconds>', 'when a silent node counts as stale', '30')
  .option('--mount-grace <seconds>', 'age after which a mount record no live container accounts for is dropped', '60')
  .option('--reconcile-interval <seconds>', 'how often mount records are checked against the Docker engine', '60')
  .action(async (flags: Omit<DaemonFlags, 'socket'>, cmd: Command) => {
    try {
      const daemon = await startDaemon({ ...flags, socket: socketOf(cmd) });
      const shutdown = (signal: string) => {
        process.stderr.write(`stowage: ${signal} received, stopping\n`);
        daemon.stop().then(() => process.exit(0), fail);
      };
      process.once('SIGTERM', () => shutdown('SIGTERM'));
      process.once('SIGINT', () => shutdown('SIGINT'));
    } catch (err) {
      fail(err);
    }
  });

program.command('create <name>')
  .description('create a volume')
  .option('--size <size>', 'size such as 10G')
  .option('--opt <key=value>', 'volume option: size, uid, gid, mode, adopt (repeatable)', collect, [])
  .action(async (name: string, flags: { size?: string; opt: string[] }, cmd: Command) => {
    try {
      const options = parseKeyValuePairs(flags.opt, '--opt');
      if (flags.size !== undefined) options.size = flags.size;
      const result = await callDaemon<{ created: boolean }>(socketOf(cmd), 'create', { name, options });
      process.stdout.write(`${name}${result.created ? '' : ' (already existed with the same options)'}\n`);
    } catch (err) { fail(err); }
  });

program.command('delete <name>')
  .alias('rm')
  .description('delete a volume and, unless --keep-data, its data')
  .option('--keep-data', 'move the data aside instead of deleting it')
  .option('--force', 'delete even though other (possibly dead) nodes still reference the volume')
  .action(async (name: string, flags: { keepData?: boolean; force?: boolean }, cmd: Command) => {
    try {
      const result = await callDaemon<{ retainedAt?: string }>(socketOf(cmd), 'remove',
        { name, ...(flags.keepData ? { keepData: true } : {}), ...(flags.force ? { force: true } : {}) });
      process.stdout.write(result.retainedAt ? `${name} (data kept at ${result.retainedAt})\n` : `${name}\n`);
    } catch (err) { fail(err); }
  });

program.command('list')
  .alias('ls')
  .description('list volumes')
  .option('--json', 'print JSON')
  .action(async (flags: { json?: boolean }, cmd: Command) => {
    try {
      printList((await callDaemon<{ volumes: never[] }>(socketOf(cmd), 'list')).volumes, Boolean(flags.json));
    } catch (err) { fail(err); }
  });

program.command('inspect <name>')
  .description('show one volume as JSON')
  .action(async (name: string, _flags: object, cmd: Command) => {
    try { printVolume(await callDaemon(socketOf(cmd), 'inspect', { name })); } catch (err) { fail(err); }
  });

program.command('info')
  .description('show the daemon\'s node, backend and settings')
  .action(async (_flags: object, cmd: Command) => {
    try { printInfo(await callDaemon(socketOf(cmd), 'info')); } catch (err) { fail(err); }
  });

const snapshot = program.command('snapshot').description('point-in-time copies of a volume (backends that can: devicemapper)');

snapshot.command('create <volume> <name>')
  .description('snapshot a volume')
  .action(async (volume: string, name: string, _flags: object, cmd: Command) => {
    try {
      await callDaemon(socketOf(cmd), 'snapshots/create', { volume, name });
      process.stdout.write(`${volume}/${name}\n`);
    } catch (err) { fail(err); }
  });

snapshot.command('list <volume>')
  .alias('ls')
  .description('list a volume\'s snapshots, oldest first')
  .option('--json', 'print JSON')
  .action(async (volume: string, flags: { json?: boolean }, cmd: Command) => {
    try {
      printSnapshots((await callDaemon<{ snapshots: SnapshotRecord[] }>(socketOf(cmd), 'snapshots/list', { volume })).snapshots,
        Boolean(flags.json));
    } catch (err) { fail(err); }
  });

snapshot.command('delete <volume> <name>')
  .alias('rm')
  .description('delete a snapshot')
  .action(async (volume: string, name: string, _flags: object, cmd: Command) => {
    try {
      await callDaemon(socketOf(cmd), 'snapshots/delete', { volume, name });
      process.stdout.write(`${volume}/${name}\n`);
    } catch (err) { fail(err); }
  });

program.command('mounts')
  .description('this node\'s mount records: volume, mount id, count, since')
  .option('--json', 'print JSON')
  .action(async (flags: { json?: boolean }, cmd: Command) => {
    try {
      printMounts((await callDaemon<{ mounts: MountRecordView[] }>(socketOf(cmd), 'mounts')).mounts, Boolean(flags.json));
    } catch (err) { fail(err); }
  });

program.command('release <volume> [id]')
  .description('drop this node\'s mount records of a volume (or one mount id), detaching it when none remain')
  .option('--force', 'even though the Docker engine shows a running container using the volume')
  .action(async (volume: string, id: string | undefined, flags: { force?: boolean }, cmd: Command) => {
    try {
      const result = await callDaemon<{ released: MountRecordView[] }>(socketOf(cmd), 'mounts/release',
        { name: volume, ...(id === undefined ? {} : { id }), ...(flags.force ? { force: true } : {}) });
      for (const m of result.released) process.stdout.write(`${m.volume} ${m.id} (${m.count})\n`);
    } catch (err) { fail(err); }
  });

const node = program.command('node').description('nodes sharing the storage of a global backend');

node.command('list')
  .alias('ls')
  .description('list nodes with last heartbeat, clock offset and version')
  .option('--json', 'print JSON')
  .action(async (flags: { json?: boolean }, cmd: Command) => {
    try {
      const answer = await callDaemon<{ nodes: NodeView[]; invalid?: InvalidNodeRecord[] }>(socketOf(cmd), 'nodes');
      printNodes(answer.nodes, answer.invalid ?? [], Boolean(flags.json));
    } catch (err) { fail(err); }
  });

node.command('forget <node>')
  .description('drop a node that is gone for good, with its references')
  .action(async (nodeId: string, _flags: object, cmd: Command) => {
    try {
      await callDaemon(socketOf(cmd), 'nodes/forget', { node: nodeId });
      process.stdout.write(`${nodeId}\n`);
    } catch (err) { fail(err); }
  });

await program.parseAsync(process.argv);
