/**
 * Section 2: every plugin call on the socket of a fresh daemon (outside Docker), with a keep-alive
 * client that talks like dockerd. First one request at a time on one connection, as dockerd sends
 * them for one volume operation; then the same calls with `concurrency` requests in flight.
 * Each call is its own phase (Mount for every volume, then Path, then Unmount), so each gets its
 * own rate, latency percentiles and daemon CPU per request. Every reply is checked.
 */
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startDaemon } from '../test/helpers/daemon-process.js';
import { benchTempDir, removeBenchTempDir } from './cleanup.js';
import { processCpuMs } from './daemon.js';
import { atLeast, fmt, metricAdder, newSection, type Section, type Target } from './report.js';
import { NULL_DRIVER } from './null-plugin.js';
import { KeepAliveClient, PluginError, type PluginReply } from './socket-client.js';
import { median, now, percentile, perSecond, runPool, timed, volumeNames } from './util.js';

export interface ThroughputOptions {
  /** Volumes of the sequential pass. */
  sequentialVolumes: number;
  /** Volumes of the pass with `concurrency` requests in flight. */
  volumes: number;
  /** Requests in flight, and open keep-alive connections, in the second pass. */
  concurrency: number;
  /** Lists timed in the sequential pass (after one warm-up). */
  lists: number;
  /** Volumes mounted at once: Mount, Path and Unmount run batch by batch. */
  mountBatch: number;
}

const CALLS = ['Create', 'Get', 'List', 'Mount', 'Path', 'Unmount', 'Remove'] as const;
type Call = (typeof CALLS)[number];

interface CallStats {
  requests: number;
  ms: number;
  /** CPU the daemon used during the phase, all threads, user + system. */
  daemonCpuMs: number;
  p50Ms: number;
  p99Ms: number;
}

type Pass = Partial<Record<Call, CallStats>>;

const TARGETS: { sequential: Partial<Record<Call, Target>>; concurrent: Partial<Record<Call, Target>> } = {
  sequential: { Create: atLeast(2000), Get: atLeast(8000), Mount: atLeast(2000), Unmount: atLeast(2000) },
  concurrent: { Create: atLeast(4000) },
};

function volumeOf(reply: PluginReply, call: string, name: string): { Name?: unknown; Mountpoint?: unknown } {
  const volume = reply.Volume as { Name?: unknown; Mountpoint?: unknown } | undefined;
  if (volume?.Name !== name) throw new PluginError(`${call} ${name} answered ${JSON.stringify(reply).slice(0, 200)}`);
  return volume;
}

function mountpointOf(reply: PluginReply, call: string, name: string): string {
  if (typeof reply.Mountpoint !== 'string' || reply.Mountpoint === '') {
    throw new PluginError(`${call} ${name} answered without a Mountpoint: ${JSON.stringify(reply).slice(0, 200)}`);
  }
  return reply.Mountpoint;
}

/** Runs every plugin call over `names`, one phase per call, and checks every reply. */
async function runPass(
  pid: number,
  client: KeepAliveClient,
  names: readonly string[],
  concurrency: number,
  opts: { lists: number; mountBatch: number },
): Promise<Pass> {
  const sums = new Map<Call, { requests: number; ms: number; daemonCpuMs: number; latencies: number[] }>();
  /** Times `fn` over `items`; a call timed in several batches adds up. */
  const phase = async (call: Call, items: readonly string[], fn: (name: string) => Promise<void>, inFlight = concurrency) => {
    const sum = sums.get(call) ?? { requests: 0, ms: 0, daemonCpuMs: 0, latencies: [] };
    sums.set(call, sum);
    const cpu = await processCpuMs(pid);
    const { ms } = await timed(() => runPool(items, inFlight, async (name) => {
      const start = now();
      await fn(name);
      sum.latencies.push(now() - start);
    }));
    sum.daemonCpuMs += (await processCpuMs(pid)) - cpu;
    sum.requests += items.length;
    sum.ms += ms;
  };
  const id = (name: string) => `bench-mount-${name}`;
  const mountpoints = new Map<string, string>();
  await phase('Create', names, async (name) => { await client.call('Create', { Name: name, Opts: {} }); });
  await phase('Get', names, async (name) => { volumeOf(await client.call('Get', { Name: name }), 'Get', name); });
  if (opts.lists > 0) {
    await client.listNames(); // warm-up
    // List answers for every volume at once: sent one at a time whatever the pass.
    await phase('List', Array.from({ length: opts.lists }, (_v, i) => String(i)), async () => {
      const listed = await client.listNames();
      if (listed.length !== names.length) throw new PluginError(`List returned ${listed.length} volumes, expected ${names.length}`);
    }, 1);
  }
  // In batches: a host has tens or hundreds of volumes mounted, not thousands, and what a mount
  // costs may grow with the mounts already recorded.
  for (let i = 0; i < names.length; i += opts.mountBatch) {
    const batch = names.slice(i, i + opts.mountBatch);
    await phase('Mount', batch, async (name) => {
      mountpoints.set(name, mountpointOf(await client.call('Mount', { Name: name, ID: id(name) }), 'Mount', name));
    });
    await phase('Path', batch, async (name) => {
      const path = mountpointOf(await client.call('Path', { Name: name }), 'Path', name);
      if (path !== mountpoints.get(name)) throw new PluginError(`Path ${name} answered ${path}, Mount answered ${mountpoints.get(name)}`);
    });
    await phase('Unmount', batch, async (name) => { await client.call('Unmount', { Name: name, ID: id(name) }); });
  }
  await phase('Remove', names, async (name) => { await client.call('Remove', { Name: name }); });
  const left = await client.listNames();
  if (left.length !== 0) throw new PluginError(`${left.length} volumes still listed after removing them all`);
  return Object.fromEntries([...sums].map(([call, sum]) => [call, {
    requests: sum.requests, ms: sum.ms, daemonCpuMs: sum.daemonCpuMs,
    p50Ms: median(sum.latencies), p99Ms: percentile(sum.latencies, 99),
  }])) as Pass;
}

/**
 * Create and Get, one at a time, against the do-nothing plugin in a process of its own: what the
 * client, node's HTTP server and this machine's system calls cost before any plugin work, the
 * floor under stowage's figures.
 */
async function nullPluginFloor(dir: string, names: readonly string[]): Promise<Pass> {
  const entry = fileURLToPath(new URL('./null-plugin-process.ts', import.meta.url));
  // execArgv carries tsx's loader, which runs the TypeScript entry.
  const child = fork(entry, [dir], { execArgv: process.execArgv, stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
  const client = new KeepAliveClient(join(dir, `${NULL_DRIVER}.sock`), 1);
  try {
    const [ready] = await once(child.stdout!, 'data') as [Buffer];
    if (!ready.toString().startsWith('ready')) throw new Error(`the do-nothing plugin said ${ready.toString()}`);
    // A floor: timed once node has compiled the request path.
    for (const name of volumeNames('nw', 200)) {
      await client.call('Create', { Name: name, Opts: {} });
      volumeOf(await client.call('Get', { Name: name }), 'Get', name);
    }
    const pass: Pass = {};
    for (const call of ['Create', 'Get'] as const) {
      const latencies: number[] = [];
      const cpu = await processCpuMs(child.pid ?? -1);
      const { ms } = await timed(() => runPool(names, 1, async (name) => {
        const start = now();
        const reply = await client.call(call, { Name: name, ...(call === 'Create' ? { Opts: {} } : {}) });
        if (call === 'Get') volumeOf(reply, call, name);
        latencies.push(now() - start);
      }));
      pass[call] = { requests: names.length, ms, daemonCpuMs: (await processCpuMs(child.pid ?? -1)) - cpu, p50Ms: median(latencies), p99Ms: percentile(latencies, 99) };
    }
    return pass;
  } finally {
    client.close();
    child.kill();
  }
}

export async function socketThroughput(opts: ThroughputOptions, progress: (line: string) => void): Promise<Section> {
  const dir = await benchTempDir();
  const socket = join(dir, 's.sock');
  const daemon = await startDaemon(socket, ['--root', join(dir, 'root')]);
  const one = new KeepAliveClient(socket, 1);
  const many = new KeepAliveClient(socket, opts.concurrency);
  try {
    await one.call('Plugin.Activate');
    await one.call('Capabilities');
    await one.call('Create', { Name: 'bench-warmup', Opts: {} });
    await one.call('Remove', { Name: 'bench-warmup' });

    const sequential = await runPass(daemon.pid, one, volumeNames('sq', opts.sequentialVolumes), 1, opts);
    progress(`sequential pass done (${opts.sequentialVolumes} volumes)`);
    const concurrent = await runPass(daemon.pid, many, volumeNames('cc', opts.volumes), opts.concurrency, { ...opts, lists: 0 });
    progress(`${opts.concurrency}-in-flight pass done (${opts.volumes} volumes)`);
    const floor = await nullPluginFloor(dir, volumeNames('nl', opts.sequentialVolumes));
    return buildSection(opts, sequential, concurrent, floor);
  } catch (error) {
    if (error instanceof PluginError) throw new Error(`${error.message}\ndaemon log tail:\n${daemon.stderr().slice(-2000)}`);
    throw error;
  } finally {
    one.close();
    many.close();
    await daemon.stop();
    await removeBenchTempDir(dir);
  }
}

function buildSection(opts: ThroughputOptions, sequential: Pass, concurrent: Pass, floor: Pass): Section {
  const c = opts.concurrency;
  const section = newSection('socket', `2. Plugin-socket calls, fresh daemon, keep-alive client: one at a time on one connection ` +
    `(${opts.sequentialVolumes} volumes) and ${c} in flight (${opts.volumes} volumes)`);
  const cells = (s: CallStats | undefined): string[] => s === undefined ? ['-', '-', '-', '-']
    : [fmt(perSecond(s.requests, s.ms)), fmt(s.p50Ms), fmt(s.p99Ms), fmt(s.daemonCpuMs / s.requests)];
  section.tables.push({
    header: ['call', '1 at a time: op/s', 'p50 ms', 'p99 ms', 'CPU ms/req', '|', `${c} in flight: op/s`, 'p50 ms', 'p99 ms', 'CPU ms/req'],
    rows: [
      ...CALLS.map((call) => [
        call === 'List' ? `List (${opts.sequentialVolumes} vols)` : call, ...cells(sequential[call]), '|', ...cells(concurrent[call]),
      ]),
      ...(['Create', 'Get'] as const).map((call) => [`${call}, do-nothing plugin`, ...cells(floor[call]), '|', ...cells(undefined)]),
    ],
  });
  const add = metricAdder(section);
  for (const [mode, pass, label] of [['seq', sequential, '1 at a time'], [`c${c}`, concurrent, `${c} in flight`]] as const) {
    const targets = mode === 'seq' ? TARGETS.sequential : TARGETS.concurrent;
    for (const call of CALLS) {
      const s = pass[call];
      if (s === undefined) continue;
      const target = targets[call];
      const key = `${mode}_${call.toLowerCase()}`;
      add(`${key}_ops_per_s`, `${call}, ${label}`, perSecond(s.requests, s.ms), 'op/s', target, { inTable: target !== undefined });
      add(`${key}_p50_ms`, `${call} p50, ${label}`, s.p50Ms, 'ms', undefined, { inTable: false });
      add(`${key}_p99_ms`, `${call} p99, ${label}`, s.p99Ms, 'ms', undefined, { inTable: false });
      add(`${key}_daemon_cpu_ms_per_request`, `${call} daemon CPU per request, ${label}`, s.daemonCpuMs / s.requests, 'ms', undefined, { inTable: false });
    }
  }
  section.notes.push('latency = client-side, request sent to reply read; CPU ms/req = user + system time of the daemon process ' +
    '(all threads) over the phase from /proc, 10 ms resolution, divided by its requests; the client shares the CPUs.');
  section.notes.push(`Mount, Path and Unmount are timed apart, batch by batch: Mount ${opts.mountBatch} volumes, Path each ` +
    '(while mounted), Unmount them, next batch. List is sent one at a time, in the first pass only.');
  for (const call of ['Create', 'Get'] as const) {
    const s = floor[call];
    if (s) add(`floor_${call.toLowerCase()}_ops_per_s`, `${call}, 1 at a time, the do-nothing plugin`, perSecond(s.requests, s.ms), 'op/s', undefined, { inTable: false });
  }
  section.notes.push('do-nothing plugin: bench/null-plugin.ts in a node process of its own on the same kind of socket, with the same client ' +
    '(its "CPU ms/req" is that process\'s): the floor under any node plugin\'s figures on this machine.');
  section.details = { ...opts, sequential, concurrent, floor };
  return section;
}
