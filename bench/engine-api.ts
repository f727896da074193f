/**
 * Section 1, headline: the Docker volume lifecycle through the engine's own HTTP API, with one
 * keep-alive connection on the private engine's unix socket, so neither CLI start-up nor
 * connection set-up hides what the volume driver costs. Per round and driver, one request at a
 * time: create xN, inspect xN, one list, rm xN; drivers alternate round by round.
 */
import { Agent } from 'node:http';
import { socketRequest, type SocketResponse } from '../test/helpers/plugin-client.js';
import { addMetric, atMost, fmt, newSection, type Section } from './report.js';
import { median, perSecond, timed, volumeNames } from './util.js';

export type Driver = 'local' | 'stowage' | 'stowage-null';

/** A reply the engine should not have given: the bench stops on the first one. */
export class EngineApiError extends Error {}

interface EngineVolume {
  Name?: unknown;
  Driver?: unknown;
}

/** One keep-alive connection to an engine, on its own API version. */
export class EngineClient {
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 1 });
  private prefix = '';

  private constructor(readonly socket: string) {}

  /** Connects and reads the engine's API version from GET /version (unversioned). */
  static async open(dockerHost: string): Promise<{ client: EngineClient; version: string; apiVersion: string }> {
    const socket = dockerHost.replace(/^unix:\/\//, '');
    const client = new EngineClient(socket);
    const res = await client.send('GET', '/version');
    const body = checkReply(res, 'GET /version', 200) as { Version?: unknown; ApiVersion?: unknown };
    if (typeof body.ApiVersion !== 'string' || !/^\d+\.\d+$/.test(body.ApiVersion)) {
      throw new EngineApiError(`GET /version answered without a usable ApiVersion: ${res.text.slice(0, 200)}`);
    }
    client.prefix = `/v${body.ApiVersion}`;
    return { client, version: String(body.Version), apiVersion: body.ApiVersion };
  }

  private send(method: string, path: string, body?: unknown): Promise<SocketResponse> {
    return socketRequest(this.socket, this.prefix + path, body, {
      method,
      agent: this.agent,
      timeoutMs: 150_000, // above the engine's own 2 min timeout for a plugin's Create
      ...(body === undefined ? {} : { contentType: 'application/json' }),
    });
  }

  async create(name: string, driver: Driver): Promise<void> {
    const res = await this.send('POST', '/volumes/create', { Name: name, Driver: driver });
    expectVolume(checkReply(res, `create ${name} (${driver})`, 201), name, driver, 'create');
  }

  async inspect(name: string, driver: Driver): Promise<void> {
    const res = await this.send('GET', `/volumes/${encodeURIComponent(name)}`);
    expectVolume(checkReply(res, `inspect ${name}`, 200), name, driver, 'inspect');
  }

  /** GET /volumes; every name in `names` must be there with `driver`, and nothing else. */
  async listExpecting(names: readonly string[], driver: Driver): Promise<void> {
    const res = await this.send('GET', '/volumes');
    const body = checkReply(res, 'list', 200) as { Volumes?: unknown };
    if (!Array.isArray(body.Volumes)) throw new EngineApiError(`list answered without a Volumes array: ${res.text.slice(0, 200)}`);
    const listed = new Map((body.Volumes as EngineVolume[]).map((v) => [String(v.Name), v.Driver]));
    const missing = names.filter((n) => !listed.has(n));
    const wrong = names.filter((n) => listed.has(n) && listed.get(n) !== driver);
    const extra = [...listed.keys()].filter((n) => !names.includes(n));
    if (missing.length > 0 || wrong.length > 0 || extra.length > 0) {
      throw new EngineApiError(`list after creating ${names.length} ${driver} volumes: ${missing.length} missing ` +
        `(${missing.slice(0, 3).join(', ')}), ${wrong.length} with another driver (${wrong.slice(0, 3).join(', ')}), ` +
        `${extra.length} unexpected (${extra.slice(0, 3).join(', ')})`);
    }
  }

  async remove(name: string): Promise<void> {
    const res = await this.send('DELETE', `/volumes/${encodeURIComponent(name)}`);
    checkReply(res, `rm ${name}`, 204);
  }

  /** Names of every volume the engine lists, whatever the driver. */
  async names(): Promise<string[]> {
    const res = await this.send('GET', '/volumes');
    const body = checkReply(res, 'list', 200) as { Volumes?: EngineVolume[] | null };
    return (body.Volumes ?? []).map((v) => String(v.Name));
  }

  close(): void {
    this.agent.destroy();
  }
}

function checkReply(res: SocketResponse, what: string, status: number): unknown {
  if (res.status !== status) {
    throw new EngineApiError(`engine API ${what}: HTTP ${res.status} (expected ${status}): ${res.text.trim().slice(0, 300)}`);
  }
  if (status === 204) {
    if (res.text !== '') throw new EngineApiError(`engine API ${what}: HTTP 204 with a body: ${res.text.slice(0, 200)}`);
    return undefined;
  }
  if (typeof res.json !== 'object' || res.json === null) {
    throw new EngineApiError(`engine API ${what}: HTTP ${status} without a JSON object: ${res.text.slice(0, 200)}`);
  }
  return res.json;
}

function expectVolume(body: unknown, name: string, driver: Driver, what: string): void {
  const volume = body as EngineVolume;
  if (volume.Name !== name || volume.Driver !== driver) {
    throw new EngineApiError(`engine API ${what} ${name}: answered Name ${JSON.stringify(volume.Name)}, ` +
      `Driver ${JSON.stringify(volume.Driver)}, expected ${name} on ${driver}`);
  }
}

export interface EngineLifecycleOptions {
  volumes: number;
  /** Also time a plugin that does nothing (null-plugin.ts): the engine's own cost of a plugin. */
  nullPlugin?: boolean;
  /** Rounds per driver; the order alternates local, stowage, local, stowage, ... */
  rounds: number;
}

export interface EngineRound {
  driver: Driver;
  round: number;
  createMs: number;
  inspectMs: number;
  listMs: number;
  removeMs: number;
  totalMs: number;
}

async function sequential(names: readonly string[], fn: (name: string) => Promise<void>): Promise<number> {
  const { ms } = await timed(async () => {
    for (const name of names) await fn(name);
  });
  return ms;
}

async function engineRound(client: EngineClient, driver: Driver, round: number, volumes: number): Promise<EngineRound> {
  const names = volumeNames(`ea${round}${driver === 'local' ? 'l' : driver === 'stowage' ? 's' : 'n'}`, volumes);
  const createMs = await sequential(names, (name) => client.create(name, driver));
  const inspectMs = await sequential(names, (name) => client.inspect(name, driver));
  const listMs = (await timed(() => client.listExpecting(names, driver))).ms;
  const removeMs = await sequential(names, (name) => client.remove(name));
  return { driver, round, createMs, inspectMs, listMs, removeMs, totalMs: createMs + inspectMs + listMs + removeMs };
}

/** One volume through every call per driver, so plugin activation and first-call costs stay out of the rounds. */
async function warmUp(client: EngineClient, driver: Driver): Promise<void> {
  const name = `bench-api-warmup-${driver}`;
  await client.create(name, driver);
  await client.inspect(name, driver);
  await client.listExpecting([name], driver);
  await client.remove(name);
}

export async function runEngineRounds(
  client: EngineClient,
  opts: EngineLifecycleOptions,
  progress: (line: string) => void,
): Promise<EngineRound[]> {
  const drivers: Driver[] = ['local', 'stowage', ...(opts.nullPlugin ? ['stowage-null' as const] : [])];
  for (const driver of drivers) await warmUp(client, driver);
  const rounds: EngineRound[] = [];
  for (let round = 1; round <= opts.rounds; round++) {
    for (const driver of drivers) {
      const result = await engineRound(client, driver, round, opts.volumes);
      progress(`engine API round ${round} ${driver}: ${fmt(result.totalMs)} ms`);
      rounds.push(result);
    }
  }
  return rounds;
}

/** The round whose total time is the median of the driver's rounds (the lower middle one for an even count). */
export function medianRound<R extends { driver: Driver; totalMs: number }>(rounds: readonly R[], driver: Driver): R {
  const mine = rounds.filter((r) => r.driver === driver);
  if (mine.length === 0) throw new Error(`no ${driver} round ran`);
  const total = median(mine.map((r) => r.totalMs));
  return mine.find((r) => r.totalMs === total) as R;
}

const PHASES = [['create', 'createMs'], ['inspect', 'inspectMs'], ['list', 'listMs'], ['rm', 'removeMs'], ['total', 'totalMs']] as const;

export function engineSection(rounds: EngineRound[], opts: EngineLifecycleOptions, engine: string): Section {
  const n = opts.volumes;
  const section = newSection('engine_api', `1a. Docker volume lifecycle through the engine API: local vs stowage ` +
    `(${n} volumes, one keep-alive connection, one request at a time, median of ${opts.rounds} rounds per driver)`);
  const local = medianRound(rounds, 'local');
  const stowage = medianRound(rounds, 'stowage');
  const requests = { create: n, inspect: n, list: 1, rm: n, total: 3 * n + 1 };
  section.tables.push({
    header: ['phase', 'requests', 'local ms', 'local op/s', 'stowage ms', 'stowage op/s', 'stowage/local'],
    rows: PHASES.map(([phase, key]) => {
      const l = local[key];
      const s = stowage[key];
      return [phase, String(requests[phase]), fmt(l), fmt(perSecond(requests[phase], l)), fmt(s),
        fmt(perSecond(requests[phase], s)), fmt(s / l)];
    }),
  });
  section.tables.push({
    header: ['round', 'driver', 'create ms', 'inspect ms', 'list ms', 'rm ms', 'total ms', 'op/s'],
    rows: rounds.map((r) => [String(r.round), r.driver, fmt(r.createMs), fmt(r.inspectMs), fmt(r.listMs),
      fmt(r.removeMs), fmt(r.totalMs), fmt(perSecond(requests.total, r.totalMs))]),
  });
  for (const [phase, key] of PHASES) {
    if (phase === 'total') continue;
    addMetric(section, { key: `local_${phase}_ops_per_s`, label: `local ${phase}`, value: perSecond(requests[phase], local[key]), unit: 'op/s', inTable: false });
    addMetric(section, { key: `stowage_${phase}_ops_per_s`, label: `stowage ${phase}`, value: perSecond(requests[phase], stowage[key]), unit: 'op/s', inTable: false });
  }
  addMetric(section, { key: 'local_total_ops_per_s', label: 'local, all calls (median round)', value: perSecond(requests.total, local.totalMs), unit: 'op/s' });
  addMetric(section, { key: 'stowage_total_ops_per_s', label: 'stowage, all calls (median round)', value: perSecond(requests.total, stowage.totalMs), unit: 'op/s' });
  addMetric(section, {
    key: 'total_ratio', label: 'engine API lifecycle time, stowage/local', unit: 'x', headline: true,
    value: stowage.totalMs / local.totalMs, target: atMost(1.25),
  });
  if (rounds.some((r) => r.driver === 'stowage-null')) {
    const floor = medianRound(rounds, 'stowage-null');
    section.tables.push({
      header: ['phase', 'null plugin ms', 'null plugin/local', 'stowage/null plugin'],
      rows: PHASES.map(([phase, key]) => [phase, fmt(floor[key]), fmt(floor[key] / local[key]), fmt(stowage[key] / floor[key])]),
    });
    addMetric(section, { key: 'null_plugin_ratio', label: 'a plugin that does nothing, time/local (the engine\'s own cost of a plugin)', value: floor.totalMs / local.totalMs, unit: 'x' });
    addMetric(section, { key: 'stowage_over_null_ratio', label: 'stowage/a plugin that does nothing', value: stowage.totalMs / floor.totalMs, unit: 'x' });
    section.notes.push('null plugin: volumes in a map, nothing else (bench/null-plugin.ts), driver stowage-null, same rounds; ' +
      'no plugin can be faster through this engine.');
  }
  section.notes.push(`Docker engine ${engine}; node:http Agent with keepAlive and maxSockets 1 on the engine's unix socket; ` +
    'every reply checked (status, Name, Driver; the list must hold exactly the round\'s volumes).');
  section.details = { ...opts, roundResults: rounds, medianLocal: local, medianStowage: stowage };
  return section;
}
