/**
 * Section 2: plugin-socket throughput of a fresh daemon (outside Docker) with a keep-alive client
 * that talks like dockerd: Create, Get, List, Mount/Unmount pairs, Remove.
 */
import { join } from 'node:path';
import { startDaemon } from '../test/helpers/daemon-process.js';
import { benchTempDir, removeBenchTempDir } from './cleanup.js';
import { processCpuMs } from './daemon.js';
import { atLeast, fmt, metricAdder, newSection, type Section } from './report.js';
import { KeepAliveClient, PluginError } from './socket-client.js';
import { median, perSecond, runPool, timed, volumeNames } from './util.js';

interface Phase {
  ms: number;
  /** CPU the daemon used during the phase, all threads, user + system. */
  daemonCpuMs: number;
}

export interface ThroughputOptions {
  volumes: number;
  /** Requests in flight, and open keep-alive connections. */
  concurrency: number;
  /** Sequential Lists timed (after one warm-up). */
  lists: number;
}

function expectName(reply: Record<string, unknown>, name: string): void {
  const volume = reply.Volume as { Name?: unknown } | undefined;
  if (volume?.Name !== name) throw new PluginError(`Get ${name} answered ${JSON.stringify(reply).slice(0, 200)}`);
}

export async function socketThroughput(opts: ThroughputOptions, progress: (line: string) => void): Promise<Section> {
  const dir = await benchTempDir();
  const socket = join(dir, 's.sock');
  const daemon = await startDaemon(socket, ['--root', join(dir, 'root')]);
  const client = new KeepAliveClient(socket, opts.concurrency);
  try {
    await client.call('Plugin.Activate');
    await client.call('Capabilities');
    await client.call('Create', { Name: 'bench-warmup', Opts: {} });
    await client.call('Remove', { Name: 'bench-warmup' });

    const names = volumeNames('tp', opts.volumes);
    const { concurrency } = opts;
    const phase = async (work: () => Promise<void>): Promise<Phase> => {
      const cpu = await processCpuMs(daemon.pid);
      const { ms } = await timed(work);
      return { ms, daemonCpuMs: (await processCpuMs(daemon.pid)) - cpu };
    };
    const create = await phase(() => runPool(names, concurrency, async (name) => {
      await client.call('Create', { Name: name, Opts: {} });
    }));
    progress(`created ${names.length} volumes in ${fmt(create.ms)} ms`);
    const get = await phase(() => runPool(names, concurrency, async (name) => {
      expectName(await client.call('Get', { Name: name }), name);
    }));
    await client.listNames();
    const listTimes: number[] = [];
    const listCpu = await processCpuMs(daemon.pid);
    for (let i = 0; i < opts.lists; i++) {
      const list = await timed(() => client.listNames());
      if (list.result.length !== names.length) throw new PluginError(`List returned ${list.result.length} volumes, expected ${names.length}`);
      listTimes.push(list.ms);
    }
    const listTotal = listTimes.reduce((a, b) => a + b, 0);
    const list: Phase = { ms: listTotal, daemonCpuMs: (await processCpuMs(daemon.pid)) - listCpu };
    const mountPairs = await phase(() => runPool(names, concurrency, async (name) => {
      const id = `bench-mount-${name}`;
      const reply = await client.call('Mount', { Name: name, ID: id });
      if (typeof reply.Mountpoint !== 'string' || reply.Mountpoint === '') {
        throw new PluginError(`Mount ${name} answered without a Mountpoint: ${JSON.stringify(reply)}`);
      }
      await client.call('Unmount', { Name: name, ID: id });
    }));
    const remove = await phase(() => runPool(names, concurrency, async (name) => {
      await client.call('Remove', { Name: name });
    }));
    const left = await client.listNames();
    if (left.length !== 0) throw new PluginError(`${left.length} volumes still listed after removing them all`);

    const section = newSection('socket', `2. Plugin-socket throughput (${opts.volumes} volumes, keep-alive client, ` +
      `${concurrency} requests in flight)`);
    const n = names.length;
    const add = metricAdder(section);
    add('create_ops_per_s', 'Create', perSecond(n, create.ms), 'ops/s', atLeast(2000));
    add('get_ops_per_s', 'Get', perSecond(n, get.ms), 'ops/s', atLeast(5000));
    add('list_ops_per_s', `List (${n} volumes, one at a time)`, perSecond(listTimes.length, listTotal), 'ops/s');
    add('list_median_ms', `List median (${n} volumes)`, median(listTimes), 'ms');
    add('mount_unmount_pairs_per_s', 'Mount+Unmount pairs', perSecond(n, mountPairs.ms), 'pairs/s');
    add('remove_ops_per_s', 'Remove', perSecond(n, remove.ms), 'ops/s');
    /** Phase, its measurements, and how many requests it sent. */
    const phases: Array<[string, Phase, number]> = [
      ['Create', create, n], ['Get', get, n], ['List', list, listTimes.length], ['Mount+Unmount', mountPairs, 2 * n], ['Remove', remove, n],
    ];
    section.tables.push({
      header: ['phase', 'requests', 'wall ms', 'daemon CPU ms', 'daemon CPU ms/request', 'daemon CPU share'],
      rows: phases.map(([label, p, requests]) => [
        label, String(requests), fmt(p.ms), fmt(p.daemonCpuMs), fmt(p.daemonCpuMs / requests), `${Math.round((100 * p.daemonCpuMs) / p.ms)}%`,
      ]),
    });
    section.notes.push('daemon CPU = user + system time of the daemon process (all threads) from /proc, 10 ms resolution; ' +
      'the client runs on the same CPUs.');
    section.details = { ...opts, create, get, list, listMs: listTimes, mountUnmount: mountPairs, remove };
    return section;
  } catch (error) {
    if (error instanceof PluginError) throw new Error(`${error.message}\ndaemon log tail:\n${daemon.stderr().slice(-2000)}`);
    throw error;
  } finally {
    client.close();
    await daemon.stop();
    await removeBenchTempDir(dir);
  }
}
