/**
 * `npm run bench`: Docker volume lifecycle (local vs stowage) through the engine API (the
 * headline) and the docker CLI, plugin calls per engine call, every plugin-socket call one at a
 * time and many in flight, List latency, memory and cold start at 10 000 volumes, and freshness
 * across nodes. Prints a table per section and a summary of every target with PASS/MISS, and
 * writes the numbers to .bench/results.json.
 *
 * Section 5 is the backup library against tar (bench/backup.ts); section 6 (`s3`, run only when
 * asked) backups to a local radosgw against a plain S3 copy of the same files (bench/s3.ts).
 *
 * Exits 0 when every section ran (missed targets included), 1 when the bench could not run.
 * Knobs (environment): BENCH_LIFECYCLE_N, BENCH_LIFECYCLE_ROUNDS, BENCH_CLI_N, BENCH_CLI_ROUNDS,
 * BENCH_CLI_CONCURRENCY, BENCH_SOCKET_SEQ_N, BENCH_SOCKET_N, BENCH_SOCKET_CONCURRENCY, BENCH_SOCKET_MOUNT_BATCH,
 * BENCH_SCALE_N, BENCH_IDLE_S, BENCH_TIMEOUT_S, BENCH_BACKUP_* (see bench/backup.ts), and BENCH_SECTIONS (e.g.
 * "2,3"; section 3 includes 4). Section names or numbers as arguments (`npm run bench -- backup`)
 * take the place of BENCH_SECTIONS.
 */
import { execFile } from 'node:child_process';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { backupBench, backupBenchOptions } from './backup.js';
import { assertCliBuilt, REPO_ROOT } from '../test/helpers/daemon-process.js';
import { checkDocker } from '../test/helpers/requirements.js';
import { cleanupAll } from './cleanup.js';
import { dockerLifecycle } from './lifecycle.js';
import { s3Bench } from './s3.js';
import { renderSection, renderSummary, sectionJson, writeJson, type Section } from './report.js';
import { atScale } from './scale.js';
import { socketThroughput } from './throughput.js';
import { envInt, errorMessage, withTimeout } from './util.js';
import { describeFilesystem } from './filesystem.js';

const RESULTS = join(REPO_ROOT, '.bench', 'results.json');

const config = {
  lifecycle: {
    engine: {
      volumes: envInt('BENCH_LIFECYCLE_N', 300),
      rounds: envInt('BENCH_LIFECYCLE_ROUNDS', 3),
      nullPlugin: true,
    },
    cli: {
      volumes: envInt('BENCH_CLI_N', 50),
      concurrency: envInt('BENCH_CLI_CONCURRENCY', 8),
      rounds: envInt('BENCH_CLI_ROUNDS', 2),
    },
    callCountVolumes: 10,
  },
  socket: {
    sequentialVolumes: envInt('BENCH_SOCKET_SEQ_N', 2000),
    volumes: envInt('BENCH_SOCKET_N', 5000),
    concurrency: envInt('BENCH_SOCKET_CONCURRENCY', 16),
    lists: 20,
    mountBatch: envInt('BENCH_SOCKET_MOUNT_BATCH', 100),
  },
  scale: {
    volumes: envInt('BENCH_SCALE_N', 10_000),
    concurrency: 32,
    listSamples: 50,
    coldStarts: 3,
    idleSeconds: envInt('BENCH_IDLE_S', 25),
  },
  timeoutS: envInt('BENCH_TIMEOUT_S', 1800),
  backup: backupBenchOptions(),
  sections: sectionsWanted(),
};

/** Sections from the arguments (numbers or names), else BENCH_SECTIONS, else all. */
function sectionsWanted(): string[] {
  const names: Record<string, string> = { lifecycle: '1', socket: '2', scale: '3', freshness: '4', backup: '5', s3: '6' };
  const args = process.argv.slice(2);
  const wanted = args.length > 0 ? args : (process.env.BENCH_SECTIONS ?? '1,2,3,5').split(',');
  return wanted.map((s) => s.trim()).map((s) => {
    const id = names[s] ?? s;
    if (!/^[1-6]$/.test(id)) throw new Error(`unknown bench section ${JSON.stringify(s)} (1-6 or ${Object.keys(names).join(', ')})`);
    return id;
  });
}

async function versionOf(file: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await promisify(execFile)(file, args, { timeout: 10_000 });
    return stdout.trim();
  } catch (error) {
    return `unavailable (${errorMessage(error)})`;
  }
}

async function environment(): Promise<Record<string, string>> {
  const cpu = cpus();
  return {
    node: process.version,
    cpus: `${cpu.length} x ${cpu[0]?.model.trim() ?? 'unknown'}`,
    memory: `${Math.round(totalmem() / 2 ** 30)} GiB`,
    kernel: release(),
    'temporary files on': await describeFilesystem(),
    'docker CLI (used)': await versionOf(process.env.STOWAGE_TEST_DOCKER_CLI ?? '/usr/bin/docker', ['--version']),
    dockerd: await versionOf('dockerd', ['--version']),
    'load average at start': loadString(),
  };
}

function loadString(): string {
  return loadavg().map((l) => l.toFixed(2)).join(' / ') + ' (1 / 5 / 15 min)';
}

const progress = (line: string): void => {
  process.stderr.write(`  .. ${line}\n`);
};

async function runSections(sections: Section[]): Promise<void> {
  let load = loadavg()[0] ?? 0;
  const show = (got: Section[]) => {
    for (const section of got) {
      section.notes.push(`load average (1 min) when the section started: ${load.toFixed(2)} on ${cpus().length} CPUs.`);
      section.details.loadAverageAtStart = load;
      sections.push(section);
      process.stdout.write(renderSection(section) + '\n');
    }
    load = loadavg()[0] ?? 0;
  };
  if (config.sections.includes('1')) {
    const check = checkDocker();
    if (!check.ok) throw new Error(`section 1 needs a Docker engine: ${check.why ?? 'requirement not met'}`);
    progress('section 1: starting a private Docker node and stowage in it');
    show(await dockerLifecycle(config.lifecycle, progress));
  }
  if (config.sections.includes('2')) {
    progress('section 2: plugin-socket throughput');
    show([await socketThroughput(config.socket, progress)]);
  }
  if (config.sections.includes('3') || config.sections.includes('4')) {
    progress(`sections 3 and 4: ${config.scale.volumes} volumes`);
    show(await atScale(config.scale, progress));
  }
  if (config.sections.includes('5')) {
    progress('section 5: backups');
    show([await backupBench(config.backup, progress)]);
  }
  if (config.sections.includes('6')) {
    progress('section 6: backups to S3 (a local radosgw)');
    show([await s3Bench(progress)]);
  }
}

async function main(): Promise<number> {
  const startedAt = new Date();
  const env = await environment();
  process.stdout.write('stowage benchmark\n' + Object.entries(env).map(([k, v]) => `  ${k.padEnd(22)} ${v}`).join('\n') + '\n');
  const sections: Section[] = [];
  let error: string | undefined;
  try {
    assertCliBuilt();
    await withTimeout(runSections(sections), config.timeoutS * 1000, 'the benchmark');
    process.stdout.write(renderSummary(sections) + '\n');
  } catch (err) {
    error = errorMessage(err);
    process.stderr.write(`\nbench could not run to completion: ${error}\n`);
  }
  const durationS = (Date.now() - startedAt.getTime()) / 1000;
  const loadAtEnd = loadString();
  process.stdout.write(`\nload average at end: ${loadAtEnd}; with ${cpus().length} CPUs shared with other work, ` +
    'absolute rates vary from run to run.\n');
  await writeJson(RESULTS, {
    startedAt: startedAt.toISOString(),
    durationS,
    complete: error === undefined,
    ...(error !== undefined ? { error } : {}),
    environment: { ...env, 'load average at end': loadAtEnd },
    config,
    sections: Object.fromEntries(sections.map((s) => [s.id, sectionJson(s)])),
  });
  process.stdout.write(`\nran in ${durationS.toFixed(1)} s; results written to ${RESULTS}\n`);
  return error === undefined ? 0 : 1;
}

// `on`, not `once`: execa's signal-exit re-raises the signal (killing us mid-cleanup) when it
// finds no other listener left.
let interrupted = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (interrupted) return;
    interrupted = true;
    process.stderr.write(`\n${signal}: cleaning up\n`);
    void cleanupAll().finally(() => process.exit(130));
  });
}

let code = 1;
try {
  code = await main();
} catch (err) {
  process.stderr.write(`bench failed: ${errorMessage(err)}\n`);
} finally {
  await cleanupAll();
}
process.exit(code);
