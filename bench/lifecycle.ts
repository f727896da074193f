/**
 * Section 1: `docker volume create / inspect / rm` through the real docker CLI of a private
 * engine, with the `local` driver and with stowage, same method and concurrency for both.
 */
import { startDockerNode, type DockerNode } from '../test/helpers/docker-node.js';
import { startStowageInNode } from '../test/helpers/stowage-in-node.js';
import { addMetric, fmt, newSection, type Section } from './report.js';
import { runPool, timed, volumeNames } from './util.js';

type Driver = 'local' | 'stowage';

export interface LifecycleOptions {
  volumes: number;
  concurrency: number;
  /** Rounds per driver; the order alternates local, stowage, local, stowage, ... */
  rounds: number;
}

interface Round {
  driver: Driver;
  round: number;
  createMs: number;
  inspectMs: number;
  removeMs: number;
  totalMs: number;
}

const PHASES = ['create', 'inspect', 'remove'] as const;

function driverArgs(driver: Driver): string[] {
  return driver === 'local' ? [] : ['-d', 'stowage'];
}

async function expectOutput(node: DockerNode, args: string[], expected: string): Promise<void> {
  const { stdout } = await node.docker(args, { timeoutMs: 120_000 });
  if (stdout.trim() !== expected) {
    throw new Error(`docker ${args.join(' ')} printed ${JSON.stringify(stdout.trim())}, expected ${JSON.stringify(expected)}`);
  }
}

async function runRound(node: DockerNode, driver: Driver, round: number, opts: LifecycleOptions): Promise<Round> {
  const names = volumeNames(`bl${round}${driver === 'local' ? 'l' : 's'}`, opts.volumes);
  const create = await timed(() => runPool(names, opts.concurrency, (name) =>
    expectOutput(node, ['volume', 'create', ...driverArgs(driver), name], name)));
  const inspect = await timed(() => runPool(names, opts.concurrency, (name) =>
    expectOutput(node, ['volume', 'inspect', '--format', '{{.Driver}}', name], driver)));
  const remove = await timed(() => runPool(names, opts.concurrency, (name) =>
    expectOutput(node, ['volume', 'rm', name], name)));
  return {
    driver, round,
    createMs: create.ms, inspectMs: inspect.ms, removeMs: remove.ms,
    totalMs: create.ms + inspect.ms + remove.ms,
  };
}

/** One volume through every phase, so plugin activation and first-call costs stay out of the rounds. */
async function warmUp(node: DockerNode, driver: Driver): Promise<void> {
  const name = `bench-warmup-${driver}`;
  await expectOutput(node, ['volume', 'create', ...driverArgs(driver), name], name);
  await expectOutput(node, ['volume', 'inspect', '--format', '{{.Driver}}', name], driver);
  await expectOutput(node, ['volume', 'rm', name], name);
}

function best(rounds: Round[], driver: Driver): Round {
  const mine = rounds.filter((r) => r.driver === driver);
  const first = mine[0];
  if (first === undefined) throw new Error(`no ${driver} round ran`);
  return mine.reduce((a, b) => (b.totalMs < a.totalMs ? b : a), first);
}

function phaseMs(round: Round, phase: (typeof PHASES)[number] | 'total'): number {
  return phase === 'create' ? round.createMs : phase === 'inspect' ? round.inspectMs
    : phase === 'remove' ? round.removeMs : round.totalMs;
}

function buildSection(rounds: Round[], opts: LifecycleOptions, engineVersion: string): Section {
  const section = newSection('lifecycle', `1. Docker volume lifecycle: local vs stowage (${opts.volumes} volumes, ` +
    `${opts.concurrency} docker CLI calls at a time, best of ${opts.rounds} rounds per driver)`);
  const local = best(rounds, 'local');
  const stowage = best(rounds, 'stowage');
  const perOp = (ms: number) => fmt(ms / opts.volumes);
  section.tables.push({
    header: ['phase', 'local ms', 'stowage ms', 'stowage/local', 'local ms/vol', 'stowage ms/vol'],
    rows: [...PHASES, 'total' as const].map((phase) => {
      const l = phaseMs(local, phase);
      const s = phaseMs(stowage, phase);
      return [phase, fmt(l), fmt(s), fmt(s / l), perOp(l), perOp(s)];
    }),
  });
  section.tables.push({
    header: ['round', 'driver', 'create ms', 'inspect ms', 'remove ms', 'total ms'],
    rows: rounds.map((r) => [String(r.round), r.driver, fmt(r.createMs), fmt(r.inspectMs), fmt(r.removeMs), fmt(r.totalMs)]),
  });
  for (const phase of PHASES) {
    addMetric(section, {
      key: `${phase}_ratio`, label: `${phase}: stowage/local`, unit: 'x',
      value: phaseMs(stowage, phase) / phaseMs(local, phase),
    });
  }
  addMetric(section, { key: 'local_total_ms', label: 'local total (best round)', value: local.totalMs, unit: 'ms' });
  addMetric(section, { key: 'stowage_total_ms', label: 'stowage total (best round)', value: stowage.totalMs, unit: 'ms' });
  addMetric(section, {
    key: 'total_ratio', label: 'total: stowage/local', unit: 'x',
    value: stowage.totalMs / local.totalMs, target: { op: '<=', value: 1.25 },
  });
  section.notes.push(`Docker engine ${engineVersion}; every call is a separate docker CLI process, so the CLI start-up is in both columns.`);
  section.details = { ...opts, roundResults: rounds, bestLocal: local, bestStowage: stowage };
  return section;
}

export async function dockerLifecycle(opts: LifecycleOptions, progress: (line: string) => void): Promise<Section> {
  const node = await startDockerNode({ name: 'bench' });
  try {
    progress(`docker node up in ${node.timings.totalMs} ms`);
    const engineVersion = (await node.docker(['version', '--format', '{{.Server.Version}}'])).stdout.trim();
    const stowage = await startStowageInNode(node);
    try {
      await warmUp(node, 'local');
      await warmUp(node, 'stowage');
      const rounds: Round[] = [];
      for (let round = 1; round <= opts.rounds; round++) {
        for (const driver of ['local', 'stowage'] as const) {
          const result = await runRound(node, driver, round, opts);
          progress(`round ${round} ${driver}: total ${fmt(result.totalMs)} ms`);
          rounds.push(result);
        }
      }
      const left = (await node.docker(['volume', 'ls', '-q'])).stdout.trim();
      if (left !== '') throw new Error(`volumes left behind after the lifecycle rounds: ${left.split('\n').slice(0, 5).join(', ')}`);
      return buildSection(rounds, opts, engineVersion);
    } finally {
      await stowage.stop();
    }
  } finally {
    await node.stop();
  }
}
