/**
 * Sections 3 and 4: a daemon holding 10 000 volumes (List latency, memory, cold start), then a
 * second daemon on another node-local root but the same shared store creating a volume behind
 * the first one's back, and the cost of the first List that must show it.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { startDaemon, type DaemonHandle } from '../test/helpers/daemon-process.js';
import { benchTempDir, removeBenchTempDir } from './cleanup.js';
import { coldStart, daemonMemory, idleMemory, processCpuMs, type ColdStart, type RawDaemon } from './daemon.js';
import { atMost, fmt, metricAdder, newSection, type Section } from './report.js';
import { KeepAliveClient, listedNames, callOnce } from './socket-client.js';
import { median, percentile, perSecond, runPool, timed, volumeNames } from './util.js';

export interface ScaleOptions {
  volumes: number;
  /** Requests in flight while filling the store. */
  concurrency: number;
  /** Timed Lists after one warm-up. */
  listSamples: number;
  coldStarts: number;
  /** Seconds the filled daemon is left without requests before its resting RSS is read. */
  idleSeconds: number;
}

const FOREIGN = 'bench-from-other-node';

/**
 * Each List's latency, sending to the answer's last byte. The answers are checked once all are
 * timed (see KeepAliveClient.listTimed), every one of them.
 */
async function timedLists(client: KeepAliveClient, count: number, expected: number): Promise<number[]> {
  const answers: Array<{ body: Buffer; ms: number }> = [];
  for (let i = 0; i < count; i++) answers.push(await client.listTimed());
  for (const [i, answer] of answers.entries()) {
    const names = listedNames(answer.body);
    if (names.length !== expected) throw new Error(`List ${i + 1} of ${count} returned ${names.length} volumes, expected ${expected}`);
  }
  return answers.map((a) => a.ms);
}

export async function atScale(opts: ScaleOptions, progress: (line: string) => void): Promise<Section[]> {
  const dir = await benchTempDir();
  const shared = join(dir, 'shared');
  await mkdir(shared);
  const store = ['--opt', `vfs.path=${shared}`, '--opt', 'vfs.shared=true'];
  const socketA = join(dir, 'a.sock');
  const argsA = ['--root', join(dir, 'root-a'), '--node-id', 'bench-a', ...store];
  let first: DaemonHandle | undefined;
  let restarted: RawDaemon | undefined;
  let other: DaemonHandle | undefined;
  try {
    // --- 3. fill, List latency, memory ---
    first = await startDaemon(socketA, argsA);
    const fill = new KeepAliveClient(socketA, opts.concurrency);
    const names = volumeNames('sc', opts.volumes);
    const fillCpu = await processCpuMs(first.pid);
    const created = await timed(() => runPool(names, opts.concurrency, async (name) => {
      await fill.call('Create', { Name: name, Opts: {} });
    }));
    fill.close();
    const fillCpuMs = (await processCpuMs(first.pid)) - fillCpu;
    progress(`created ${names.length} volumes in ${fmt(created.ms)} ms`);
    const client = new KeepAliveClient(socketA, 1);
    const warm = await timedLists(client, 1, names.length);
    const lists = await timedLists(client, opts.listSamples, names.length);
    client.close();
    const memory = await daemonMemory(first.pid);
    const atRest = await idleMemory(first.pid, opts.idleSeconds);
    const stopping = first;
    first = undefined;
    const stopMs = (await timed(() => stopping.stop('SIGTERM'))).ms;

    // --- cold starts on the same root and store ---
    const starts: ColdStart[] = [];
    for (let i = 0; i < opts.coldStarts; i++) {
      if (restarted) await restarted.stop('SIGTERM');
      const started = await coldStart(socketA, argsA);
      restarted = started.daemon;
      if (started.result.listedCount !== names.length) {
        throw new Error(`List after cold start showed ${started.result.listedCount} volumes, expected ${names.length}`);
      }
      starts.push(started.result);
      progress(`cold start ${i + 1}: List answered ${fmt(started.result.list.readyMs)} ms after spawn`);
    }
    if (!restarted) throw new Error('no cold start ran');
    const restartedMemory = await daemonMemory(restarted.pid);

    const scale = newSection('scale', `3. At ${names.length} volumes`);
    const add = metricAdder(scale);
    add('fill_create_ops_per_s', `Create while filling (${opts.concurrency} in flight)`, perSecond(names.length, created.ms), 'ops/s');
    add('fill_cpu_ms_per_create', 'daemon CPU per Create while filling', fillCpuMs / names.length, 'ms');
    add('list_first_ms', 'List, first after filling', warm[0] ?? NaN, 'ms');
    add('list_median_ms', `List median of ${lists.length} (to the answer's last byte)`, median(lists), 'ms', atMost(20));
    add('list_p95_ms', `List p95 of ${lists.length} (to the answer's last byte)`, percentile(lists, 95), 'ms', atMost(20));
    add('rss_mb', 'daemon RSS (VmRSS) right after the Lists', memory.rssMb, 'MB');
    add('rss_idle_mb', `daemon RSS after ${opts.idleSeconds} s without requests`, atRest.rssMb, 'MB', atMost(80));
    add('hwm_mb', 'daemon peak RSS (VmHWM)', memory.hwmMb, 'MB');
    add('stop_ms', 'SIGTERM to exit', stopMs, 'ms');
    const of = `median of ${starts.length}`;
    add('cold_activate_ms', `cold start: spawn to Plugin.Activate (${of})`, median(starts.map((s) => s.activate.readyMs)), 'ms', atMost(500));
    add('cold_list_ms', `cold start: spawn to List answered (${of})`, median(starts.map((s) => s.list.readyMs)), 'ms', atMost(500));
    add('cold_first_list_ms', `cold start: duration of that first List (${of})`, median(starts.map((s) => s.list.requestMs)), 'ms');
    add('cold_rss_mb', 'RSS of the restarted daemon after its first List', restartedMemory.rssMb, 'MB');
    scale.tables.push({
      header: ['cold start', 'spawn to Activate ms', 'spawn to List ms', 'first List ms'],
      rows: starts.map((s, i) => [String(i + 1), fmt(s.activate.readyMs), fmt(s.list.readyMs), fmt(s.list.requestMs)]),
    });
    scale.notes.push('daemon on --opt vfs.path=<shared> --opt vfs.shared=true, so section 4 can share the store; ' +
      'cold start = new process on the same root, page cache warm; Activate and List are polled side by side every 2 ms.');
    scale.details = {
      ...opts, fillMs: created.ms, fillCpuMs, listsMs: lists, warmListMs: warm, memory, idleRssMb: atRest.samplesMb, restartedMemory,
      coldStarts: starts.map((s) => ({ activateMs: s.activate.readyMs, listReadyMs: s.list.readyMs, firstListMs: s.list.requestMs })),
    };

    // --- 4. a volume created through another node's daemon ---
    const watcher = new KeepAliveClient(socketA, 1);
    const steady = await timedLists(watcher, 5, names.length);
    other = await startDaemon(join(dir, 'b.sock'), ['--root', join(dir, 'root-b'), '--node-id', 'bench-b', ...store]);
    await callOnce(other.socket, 'Create', { Name: FOREIGN, Opts: {} });
    const fresh = await timed(() => watcher.listNames());
    if (!fresh.result.includes(FOREIGN)) {
      throw new Error(`FRESHNESS FAILURE: volume ${FOREIGN}, created through a second daemon on the same shared store, ` +
        `is missing from the first daemon's next List (${fresh.result.length} volumes listed)`);
    }
    if (fresh.result.length !== names.length + 1) {
      throw new Error(`List after the foreign create showed ${fresh.result.length} volumes, expected ${names.length + 1}`);
    }
    const after = await timedLists(watcher, 5, names.length + 1);
    const got = await watcher.call('Get', { Name: FOREIGN });
    if ((got.Volume as { Name?: unknown } | undefined)?.Name !== FOREIGN) {
      throw new Error(`Get ${FOREIGN} on the first daemon failed: ${JSON.stringify(got)}`);
    }
    watcher.close();

    const freshness = newSection('freshness', `4. Registry changed by another node (${names.length} volumes, shared store)`);
    const addFresh = metricAdder(freshness);
    addFresh('steady_list_median_ms', 'List before, median of 5', median(steady), 'ms');
    addFresh('first_list_after_foreign_create_ms', 'first List after the other node\'s Create (includes it)', fresh.ms, 'ms');
    addFresh('list_after_median_ms', 'List after, median of 5', median(after), 'ms');
    freshness.details = { steadyMs: steady, firstMs: fresh.ms, afterMs: after };
    return [scale, freshness];
  } finally {
    await other?.stop('SIGTERM');
    await restarted?.stop('SIGTERM');
    await first?.stop('SIGTERM');
    await removeBenchTempDir(dir);
  }
}
