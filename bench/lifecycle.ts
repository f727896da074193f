/**
 * Section 1: one private Docker engine with stowage in it. 1a (the headline) times the volume
 * lifecycle through the engine's own API (engine-api.ts); 1b the same through the docker CLI, as
 * a user sees it, where CLI start-up dominates both columns; 1c counts the plugin calls the
 * engine makes per API call (plugin-calls.ts).
 */
import { startDockerNode, type DockerNode } from '../test/helpers/docker-node.js';
import { startStowageInNode, type StowageInNode } from '../test/helpers/stowage-in-node.js';
import { EngineApiError, EngineClient, engineSection, medianRound, runEngineRounds, type Driver, type EngineLifecycleOptions } from './engine-api.js';
import { startNullPlugin } from './null-plugin.js';
import { countPluginCalls } from './plugin-calls.js';
import { addMetric, fmt, newSection, type Section } from './report.js';
import { runPool, timed, volumeNames } from './util.js';

export interface LifecycleOptions {
  engine: EngineLifecycleOptions;
  cli: CliOptions;
  /** Volumes per engine call in the plugin-call count (1c). */
  callCountVolumes: number;
}

export interface CliOptions {
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

async function runRound(node: DockerNode, driver: Driver, round: number, opts: CliOptions): Promise<Round> {
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

function phaseMs(round: Round, phase: (typeof PHASES)[number] | 'total'): number {
  return phase === 'create' ? round.createMs : phase === 'inspect' ? round.inspectMs
    : phase === 'remove' ? round.removeMs : round.totalMs;
}

function buildSection(rounds: Round[], opts: CliOptions, engineVersion: string): Section {
  const section = newSection('cli', `1b. Docker volume lifecycle through the docker CLI: local vs stowage (${opts.volumes} volumes, ` +
    `${opts.concurrency} docker CLI calls at a time, median of ${opts.rounds} rounds per driver; no target)`);
  const local = medianRound(rounds, 'local');
  const stowage = medianRound(rounds, 'stowage');
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
  addMetric(section, { key: 'local_total_ms', label: 'local total (median round)', value: local.totalMs, unit: 'ms' });
  addMetric(section, { key: 'stowage_total_ms', label: 'stowage total (median round)', value: stowage.totalMs, unit: 'ms' });
  addMetric(section, { key: 'total_ratio', label: 'total: stowage/local (information only)', unit: 'x', value: stowage.totalMs / local.totalMs });
  section.notes.push(`Docker engine ${engineVersion}; every call is a separate docker CLI process, so the CLI start-up is in both ` +
    'columns and hides most of the driver\'s cost: the headline is 1a.');
  section.details = { ...opts, roundResults: rounds, medianLocal: local, medianStowage: stowage };
  return section;
}

async function cliRounds(node: DockerNode, opts: CliOptions, progress: (line: string) => void): Promise<Round[]> {
  await warmUp(node, 'local');
  await warmUp(node, 'stowage');
  const rounds: Round[] = [];
  for (let round = 1; round <= opts.rounds; round++) {
    for (const driver of ['local', 'stowage'] as const) {
      const result = await runRound(node, driver, round, opts);
      progress(`CLI round ${round} ${driver}: ${fmt(result.totalMs)} ms`);
      rounds.push(result);
    }
  }
  return rounds;
}

/** Runs stowage the way a node would: talking to its own engine. */
function startStowage(node: DockerNode, socket?: string): Promise<StowageInNode> {
  return startStowageInNode(node, { args: ['--docker-host', node.dockerHost, ...(socket ? ['--socket', socket] : [])] });
}

async function expectNoVolumes(api: EngineClient, after: string): Promise<void> {
  const left = await api.names();
  if (left.length > 0) throw new Error(`volumes left behind after ${after}: ${left.slice(0, 5).join(', ')}`);
}

export async function dockerLifecycle(opts: LifecycleOptions, progress: (line: string) => void): Promise<Section[]> {
  const node = await startDockerNode({ name: 'bench' });
  let stowage: StowageInNode | undefined;
  let api: EngineClient | undefined;
  try {
    progress(`docker node up in ${node.timings.totalMs} ms`);
    stowage = await startStowage(node);
    const opened = await EngineClient.open(node.dockerHost);
    api = opened.client;
    const engine = `${opened.version} (API ${opened.apiVersion})`;
    const floor = opts.engine.nullPlugin ? await startNullPlugin(node.pluginsDir) : undefined;
    const engineRounds = await runEngineRounds(api, opts.engine, progress).finally(() => floor?.close());
    await expectNoVolumes(api, 'the engine API rounds');
    const sections = [engineSection(engineRounds, opts.engine, engine)];
    sections.push(buildSection(await cliRounds(node, opts.cli, progress), opts.cli, engine));
    await expectNoVolumes(api, 'the CLI rounds');
    await stowage.stop();
    stowage = undefined;
    sections.push(await countPluginCalls(node, api, opts.callCountVolumes, (socket) => startStowage(node, socket)));
    await expectNoVolumes(api, 'the plugin-call count');
    return sections;
  } catch (error) {
    if (error instanceof EngineApiError && stowage !== undefined) {
      throw new Error(`${error.message}\nstowage log tail:\n${(await stowage.log()).slice(-2000)}`);
    }
    throw error;
  } finally {
    api?.close();
    await stowage?.stop();
    await node.stop();
  }
}
