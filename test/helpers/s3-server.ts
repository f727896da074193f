/**
 * A real S3 server for the tests: Ceph's radosgw in front of one monitor and one OSD with the
 * in-memory `memstore` object store, all on 127.0.0.1 under one directory, from Debian's packages
 * (ceph-mon ceph-osd radosgw ceph-common). Every step has a bounded timeout and fails with its log
 * tail: Ceph's clients otherwise wait 300 s for a monitor that will never answer.
 *
 * One server serves a whole `npm test` run: the first test file that needs it starts it detached
 * under the run directory that test/helpers/s3-global-setup.ts provides, later files find it
 * there, and the global teardown stops it. The bench starts its own with startCephS3.
 */
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { closeSync, existsSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { pidAlive, sleep } from './child-process-stop.js';

export interface S3ServerInfo {
  /** http://127.0.0.1:PORT */
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** The directory holding the cluster's config, keyrings, logs and pid records. */
  dir: string;
}

/** Where each daemon's pid is recorded, so a later process (teardown, a new run) can stop it. */
interface PidRecord { mon?: number; osd?: number; rgw?: number }

export interface StartOptions {
  /** Bytes the in-memory OSD may hold (default 2 GiB; memory is used only as objects arrive). */
  memstoreBytes?: number;
}

const CONF = 'ceph.conf';
const INFO = 'server.json';
const PIDS = 'pids.json';
const RGW_NAME = 'client.rgw.r';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

function tail(path: string, lines = 25): string {
  try {
    return readFileSync(path, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return `(no log at ${path})`;
  }
}

/** Runs one setup step with a timeout; throws with its output and `logs`' tails when it fails. */
async function step(dir: string, what: string, argv: readonly string[], timeoutMs: number, logs: readonly string[] = []): Promise<string> {
  const [file, ...args] = argv;
  const result = await execa(file!, args, {
    reject: false, timeout: timeoutMs, stdin: 'ignore', env: { CEPH_CONF: join(dir, CONF) },
  });
  if (result.exitCode === 0 && !result.timedOut) return String(result.stdout);
  const why = result.timedOut ? `did not finish within ${timeoutMs / 1000} s` : `exited with ${result.exitCode ?? result.signal}`;
  throw new Error(`[s3-server] ${what} (${argv.join(' ')}) ${why}:\n${String(result.stderr).slice(-3000)}\n${String(result.stdout).slice(-1000)}${
    logs.map((log) => `\n--- ${log}:\n${tail(log)}`).join('')}`);
}

/** Starts a daemon in the foreground of its own session, detached from this process, logging to a file. */
function spawnDaemon(dir: string, argv: readonly string[], logName: string): number {
  const out = openSync(join(dir, 'log', `${logName}.out`), 'a');
  try {
    const child = spawn(argv[0]!, argv.slice(1), {
      detached: true, stdio: ['ignore', out, out], env: { ...process.env, CEPH_CONF: join(dir, CONF) },
    });
    child.unref();
    if (child.pid === undefined) throw new Error(`[s3-server] could not start ${argv[0]}`);
    return child.pid;
  } finally {
    closeSync(out);
  }
}

async function until(what: string, timeoutMs: number, probe: () => Promise<boolean>, alive: () => Promise<boolean>, logs: readonly string[]): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe()) return;
    const dead = !(await alive());
    if (dead || Date.now() > deadline) {
      throw new Error(`[s3-server] ${what} ${dead ? 'exited first' : `not within ${timeoutMs / 1000} s`}${logs.map((log) => `\n--- ${log}:\n${tail(log)}`).join('')}`);
    }
    await sleep(250);
  }
}

/** True once something answers HTTP on host:port (any status). */
function answersHttp(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    let got = '';
    const done = (ok: boolean) => { socket.destroy(); resolve(ok); };
    socket.setTimeout(2_000, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n'));
    socket.on('data', (chunk: Buffer) => { got += chunk.toString('latin1'); if (got.startsWith('HTTP/1.1')) done(true); });
    socket.once('end', () => done(got.startsWith('HTTP/')));
  });
}

async function readPids(dir: string): Promise<PidRecord> {
  return JSON.parse(await readFile(join(dir, PIDS), 'utf8').catch(() => '{}')) as PidRecord;
}

async function recordPid(dir: string, name: keyof PidRecord, pid: number | undefined): Promise<void> {
  const pids = await readPids(dir);
  if (pid === undefined) delete pids[name]; else pids[name] = pid;
  await writeFile(join(dir, PIDS), JSON.stringify(pids));
}

/** A recorded pid is ours only while its command line still names this directory's config. */
function isOurs(dir: string, pid: number | undefined): pid is number {
  if (pid === undefined) return false;
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes(join(dir, CONF));
  } catch {
    return false;
  }
}

async function stopPid(dir: string, pid: number | undefined): Promise<void> {
  if (!isOurs(dir, pid)) return;
  try { process.kill(pid, 'SIGTERM'); } catch { return; }
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (!(await pidAlive(pid)) || !isOurs(dir, pid)) return;
    await sleep(100);
  }
  try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
}

function conf(dir: string, fsid: string, monPort: number, rgwPort: number, memstoreBytes: number): string {
  return `[global]
fsid = ${fsid}
mon host = [v2:127.0.0.1:${monPort}]
mon initial members = a
ms bind ipv6 = false
ms bind ipv4 = true
public addr = 127.0.0.1
cluster addr = 127.0.0.1
keyring = ${dir}/$name.keyring
run dir = ${dir}/run
admin socket = ${dir}/run/$name.asok
pid file = ${dir}/run/$name.pid
log file = ${dir}/log/$name.log
log to stderr = false
err to stderr = true
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
# Fail in seconds, not the default 300, when a monitor or OSD does not answer.
client mount timeout = 20
rados mon op timeout = 30
rados osd op timeout = 60

[mon.a]
mon data = ${dir}/mon.a
mon data avail crit = 0
mon data avail warn = 0

[osd.0]
osd data = ${dir}/osd.0
osd objectstore = memstore
memstore device bytes = ${memstoreBytes}

[${RGW_NAME}]
rgw frontends = beast endpoint=127.0.0.1:${rgwPort}
rgw data = ${dir}/rgw
`;
}

/**
 * Starts a one-node Ceph cluster with radosgw under `dir` (created; must not exist yet) and an S3
 * user; resolves when the gateway answers. On failure it stops what it started and throws with
 * the failing step's output and log tails.
 */
export async function startCephS3(dir: string, options: StartOptions = {}): Promise<S3ServerInfo> {
  await mkdir(dir, { recursive: false, mode: 0o700 });
  try {
    return await startIn(dir, options);
  } catch (err) {
    await stopCephS3(dir, { keepDir: true });
    throw err;
  }
}

async function startIn(dir: string, options: StartOptions): Promise<S3ServerInfo> {
  for (const sub of ['run', 'log', 'mon.a', 'osd.0', 'rgw']) await mkdir(join(dir, sub));
  const [monPort, rgwPort] = [await freePort(), await freePort()];
  const fsid = randomUUID();
  await writeFile(join(dir, CONF), conf(dir, fsid, monPort, rgwPort, options.memstoreBytes ?? 2 * 1024 ** 3));
  const c = ['-c', join(dir, CONF)];
  const monLog = join(dir, 'log', 'mon.a.log');
  const osdLog = join(dir, 'log', 'osd.0.log');
  const rgwLog = join(dir, 'log', `${RGW_NAME}.log`);
  const monKeyring = join(dir, 'mon.a.keyring');
  const adminKeyring = join(dir, 'client.admin.keyring');
  const ceph = (what: string, args: readonly string[], timeoutMs = 30_000) =>
    step(dir, what, ['ceph', ...c, '--connect-timeout', '20', ...args], timeoutMs, [monLog]);

  await step(dir, 'mon keyring', ['ceph-authtool', '--create-keyring', monKeyring, '--gen-key', '-n', 'mon.', '--cap', 'mon', 'allow *'], 20_000);
  await step(dir, 'admin keyring', ['ceph-authtool', '--create-keyring', adminKeyring, '--gen-key', '-n', 'client.admin',
    '--cap', 'mon', 'allow *', '--cap', 'osd', 'allow *', '--cap', 'mgr', 'allow *'], 20_000);
  await step(dir, 'admin key into the mon keyring', ['ceph-authtool', monKeyring, '--import-keyring', adminKeyring], 20_000);
  await step(dir, 'monmap', ['monmaptool', '--create', '--addv', 'a', `[v2:127.0.0.1:${monPort}]`, '--fsid', fsid, join(dir, 'monmap')], 20_000);
  await step(dir, 'mon mkfs', ['ceph-mon', ...c, '--id', 'a', '--mkfs', '--monmap', join(dir, 'monmap'), '--keyring', monKeyring], 60_000, [monLog]);
  const mon = spawnDaemon(dir, ['ceph-mon', ...c, '--id', 'a', '-f'], 'mon.a');
  await recordPid(dir, 'mon', mon);

  const osdId = (await ceph('osd create', ['osd', 'create'])).trim();
  if (osdId !== '0') throw new Error(`[s3-server] ceph osd create gave id ${JSON.stringify(osdId)}, expected 0`);
  await step(dir, 'osd keyring', ['ceph-authtool', '--create-keyring', join(dir, 'osd.0.keyring'), '--gen-key', '-n', 'osd.0'], 20_000);
  await ceph('osd auth', ['auth', 'add', 'osd.0', 'osd', 'allow *', 'mon', 'allow profile osd', '-i', join(dir, 'osd.0.keyring')]);
  await ceph('osd crush add', ['osd', 'crush', 'add', 'osd.0', '1', 'root=default']);
  await step(dir, 'osd mkfs', ['ceph-osd', ...c, '--id', '0', '--mkfs'], 60_000, [osdLog]);
  const osd = spawnDaemon(dir, ['ceph-osd', ...c, '--id', '0', '-f'], 'osd.0');
  await recordPid(dir, 'osd', osd);
  await until('osd.0 up', 60_000, async () => {
    const stat = await execa('ceph', [...c, '--connect-timeout', '10', 'osd', 'stat', '-f', 'json'], { reject: false, timeout: 20_000, stdin: 'ignore' });
    return stat.exitCode === 0 && (JSON.parse(String(stat.stdout)) as { num_up_osds?: number }).num_up_osds === 1;
  }, async () => isOurs(dir, osd) && isOurs(dir, mon), [osdLog, join(dir, 'log', 'osd.0.out'), monLog]);

  await ceph('rgw keyring', ['auth', 'get-or-create', RGW_NAME, 'mon', 'allow rw', 'osd', 'allow rwx', '-o', join(dir, `${RGW_NAME}.keyring`)]);
  await startGatewayIn(dir, rgwPort);

  const accessKeyId = `STOWAGE${randomBytes(6).toString('hex').toUpperCase()}`;
  const secretAccessKey = randomBytes(24).toString('base64url');
  await step(dir, 'S3 user', ['radosgw-admin', ...c, 'user', 'create', '--uid', 'stowage-test', '--display-name', 'stowage test',
    '--access-key', accessKeyId, '--secret-key', secretAccessKey], 60_000, [rgwLog]);
  const info: S3ServerInfo = { endpoint: `http://127.0.0.1:${rgwPort}`, region: 'us-east-1', accessKeyId, secretAccessKey, dir };
  await writeFile(join(dir, INFO), JSON.stringify(info), { mode: 0o600 });
  return info;
}

async function startGatewayIn(dir: string, port: number): Promise<void> {
  const rgwLog = join(dir, 'log', `${RGW_NAME}.log`);
  const rgw = spawnDaemon(dir, ['radosgw', '-c', join(dir, CONF), '-n', RGW_NAME, '-f'], 'rgw');
  await recordPid(dir, 'rgw', rgw);
  await until('radosgw answering HTTP', 90_000, () => answersHttp(port), async () => isOurs(dir, rgw), [rgwLog, join(dir, 'log', 'rgw.out')]);
}

/**
 * Another S3 user on the server, with keys of its own and no rights to the first user's buckets
 * until a bucket policy grants them (its ARN: `arn:aws:iam:::user/<uid>`).
 */
export async function createS3User(server: S3ServerInfo, uid: string): Promise<{ accessKeyId: string; secretAccessKey: string; arn: string }> {
  const accessKeyId = `STOWAGE${randomBytes(6).toString('hex').toUpperCase()}`;
  const secretAccessKey = randomBytes(24).toString('base64url');
  await step(server.dir, `S3 user ${uid}`, ['radosgw-admin', '-c', join(server.dir, CONF), 'user', 'create', '--uid', uid, '--display-name', uid,
    '--access-key', accessKeyId, '--secret-key', secretAccessKey], 60_000);
  return { accessKeyId, secretAccessKey, arn: `arn:aws:iam:::user/${uid}` };
}

/** Stops radosgw only (the S3 endpoint goes away; the cluster behind it stays). */
export async function stopGateway(server: S3ServerInfo): Promise<void> {
  await stopPid(server.dir, (await readPids(server.dir)).rgw);
  await recordPid(server.dir, 'rgw', undefined);
}

/** Starts radosgw again on the same port, after stopGateway. */
export async function startGateway(server: S3ServerInfo): Promise<void> {
  if (isOurs(server.dir, (await readPids(server.dir)).rgw)) return;
  await startGatewayIn(server.dir, Number(new URL(server.endpoint).port));
}

/** Stops every daemon recorded under `dir` and removes it (unless keepDir). */
export async function stopCephS3(dir: string, options: { keepDir?: boolean } = {}): Promise<void> {
  const pids = await readPids(dir);
  await stopPid(dir, pids.rgw);
  await stopPid(dir, pids.osd);
  await stopPid(dir, pids.mon);
  if (!options.keepDir) await rm(dir, { recursive: true, force: true });
}

// ---- one server per test run ----

/** Run directories live here; the global setup removes those of runs that are gone. */
export const RUN_DIR_PREFIX = 'stowage-s3-run-';
/** The environment variable the global setup passes the run directory in. */
export const RUN_DIR_ENV = 'STOWAGE_TEST_S3_RUN_DIR';

/** For the global setup: stops and removes what crashed earlier runs left (their owner is dead). */
export async function reapStaleRuns(): Promise<string[]> {
  const reaped: string[] = [];
  for (const name of readdirSync(tmpdir())) {
    if (!name.startsWith(RUN_DIR_PREFIX)) continue;
    const runDir = join(tmpdir(), name);
    const owner = Number(name.slice(RUN_DIR_PREFIX.length).split('-')[0]);
    if (Number.isInteger(owner) && owner > 0 && (await pidAlive(owner))) continue;
    await stopCephS3(join(runDir, 'ceph'));
    await rm(runDir, { recursive: true, force: true });
    reaped.push(runDir);
  }
  return reaped;
}

let shared: Promise<S3ServerInfo> | undefined;

/**
 * The run's S3 server, started by the first caller of the run and reused by every later test
 * file (the run directory comes from the global setup). A server whose gateway was left stopped
 * is restarted; one whose cluster is gone is started afresh.
 */
export function sharedS3Server(): Promise<S3ServerInfo> {
  shared ??= (async () => {
    const runDir = process.env[RUN_DIR_ENV];
    if (!runDir) throw new Error(`[s3-server] ${RUN_DIR_ENV} is not set: run the tests through vitest.config.ts (its globalSetup provides it)`);
    const dir = join(runDir, 'ceph');
    const infoPath = join(dir, INFO);
    if (existsSync(infoPath)) {
      const info = JSON.parse(await readFile(infoPath, 'utf8')) as S3ServerInfo;
      const pids = await readPids(dir);
      if (isOurs(dir, pids.mon) && isOurs(dir, pids.osd)) {
        await startGateway(info);
        return info;
      }
    }
    await stopCephS3(dir);
    return startCephS3(dir);
  })();
  const started = shared;
  started.catch(() => { if (shared === started) shared = undefined; });
  return started;
}
