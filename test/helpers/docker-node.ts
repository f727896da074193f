/**
 * Private Docker engines ("nodes") for end-to-end tests.
 *
 * Each node is a dockerd with its own data root, exec root and socket, running
 * in its own private mount namespace kept alive by a "holder" process. Inside
 * that namespace a private directory is bind-mounted over each fixed path
 * dockerd reads or writes (`/run/docker`, `/run/docker/plugins`, `/etc/docker`,
 * `/run/containerd`), so two nodes on one machine never see each other's
 * plugin sockets, spec files, engine key or containerd. Mounts made in a node's
 * namespace are invisible to the host and to other nodes, which is why a
 * volume plugin under test must run *inside* the node's namespace
 * (`spawnInNamespace`).
 *
 * Lifecycle, in a test file:
 *
 * ```ts
 * const skip = systemSuite('docker', checkDocker());
 * describe.skipIf(skip)('my e2e', () => {
 *   let node: DockerNode;
 *   beforeAll(async () => { node = await startDockerNode({ name: 'a' }); });
 *   afterAll(async () => { await node?.stop(); }); // or: afterAll(stopAll)
 * });
 * ```
 *
 * Register `stop()` in `afterAll` right after starting: it is idempotent and
 * also runs when `startDockerNode` itself failed half-way. If the test process
 * dies without running it (crash, SIGKILL, vitest killing a worker), every
 * helper process was started under `setpriv --pdeathsig`, so the kernel
 * sends dockerd SIGTERM (it stops its containers and containerd) and the
 * holder SIGKILL; the next `startDockerNode` removes the orphaned directory.
 * pdeathsig follows the *thread* that spawned the process, so start nodes
 * from test files and hooks (the worker's main thread), not from a
 * `worker_threads` Worker that may exit before the test ends.
 * Set `STOWAGE_TEST_KEEP_NODES=1` to keep node directories (logs, data) after
 * `stop()` for debugging; processes are stopped either way.
 *
 * This file boots and stops engines; beside it, node-namespace.ts holds the
 * namespace (holder, nsenter, the final sweep), node-mounts.ts cleans host
 * mounts under a node's directory, node-orphans.ts reaps dead runs' nodes and
 * child-process-stop.ts stops processes.
 */
import { execa, type ResultPromise } from 'execa';
import { chmod, copyFile, mkdir, mkdtemp, readFile, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { pidAlive, sleep, terminate } from './child-process-stop.js';
import { unmountUnder } from './node-mounts.js';
import {
  HOLDER_TARGETS, holderReady, killNamespace, namespaceOf, nsenterArgs, startHolder, type Holder,
} from './node-namespace.js';
import { NODE_DIR_PREFIX, ownerRecord, reapOrphanedNodes } from './node-orphans.js';
import { isExecutable } from './requirements.js';

export const TEST_IMAGE = 'stowage-test:busybox';

export interface CommandResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export interface RunOptions {
  /** Throw when the command exits non-zero or times out. @default true */
  reject?: boolean;
  input?: string;
  /** @default 60_000 */
  timeoutMs?: number;
}

export interface SpawnOptions {
  /** Working directory inside the namespace. @default node.dir */
  cwd?: string;
  /** Added to the test process's environment. */
  env?: Record<string, string>;
  /** Where stdout and stderr go (appended). @default `<dir>/logs/<program>-<n>.log` */
  logFile?: string;
}

const spawnOptions = { stdin: 'ignore', stdout: 'ignore', stderr: 'ignore', reject: false } as const;

/**
 * Opens the log in the host namespace and execs the rest of argv with stdout
 * and stderr on it: the program writes straight to the file, so its output
 * neither fills a pipe nor depends on the test process staying alive.
 */
const LOG_SCRIPT = 'log=$1; shift; exec "$@" >>"$log" 2>&1';

/** execa subprocess of a long-lived program; resolves (never rejects) when it exits. */
export type NamespaceProcess = ResultPromise<typeof spawnOptions & { env: Record<string, string> }>;

export interface NodeTimings {
  namespaceMs: number;
  engineMs: number;
  imageMs: number;
  totalMs: number;
}

export interface DockerNode {
  readonly name: string;
  /** The node's private directory T. */
  readonly dir: string;
  readonly holderPid: number;
  readonly dockerHost: string;
  /** Host path that this engine sees as `/run/docker/plugins` (legacy plugin sockets). */
  readonly pluginsDir: string;
  /** Host path that this engine sees as `/etc/docker/plugins` (legacy `.spec` files). */
  readonly specDir: string;
  readonly image: string;
  /** Whether the node has a network namespace of its own (`StartOptions.network`). */
  readonly ownNetwork: boolean;
  readonly timings: NodeTimings;
  /** Run the docker CLI against this node. */
  docker(args: string[], opts?: RunOptions): Promise<CommandResult>;
  /**
   * Start a long-lived program inside the node's mount namespace, e.g. the
   * stowage daemon. Stop it with `p.kill('SIGTERM')` then `await p` (the
   * promise resolves with `exitCode`/`signal`, it does not reject); `stop()`
   * terminates whatever is still running, after removing containers, so a
   * plugin can still serve their Unmount calls.
   */
  spawnInNamespace(argv: string[], opts?: SpawnOptions): NamespaceProcess;
  /** Run a program to completion inside the node's mount namespace. */
  execInNamespace(argv: string[], opts?: RunOptions & Omit<SpawnOptions, 'logFile'>): Promise<CommandResult>;
  /**
   * Stop dockerd (SIGTERM, as an init system does) and start it again in the same namespace, with
   * the same flags or `opts.daemonArgs` in place of the extra ones; resolves once the engine
   * answers. Containers survive only with `--live-restore` on the engine being stopped.
   */
  restartEngine(opts?: { daemonArgs?: string[] }): Promise<void>;
  /** The first half of restartEngine: dockerd stopped, its containers kept (stopped) on disk. */
  stopEngine(): Promise<void>;
  /** The second half: a no-op while dockerd runs. */
  startEngine(opts?: { daemonArgs?: string[] }): Promise<void>;
  /** Remove containers, stop dockerd and every process in the namespace, delete `dir`. Idempotent. */
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Letters, digits, `.`, `_`, `-`; used in the directory name and in messages. */
  name: string;
  /** Parent of the node directory. @default os.tmpdir() */
  baseDir?: string;
  /** Extra dockerd flags, e.g. `['--storage-driver', 'vfs']`. */
  daemonArgs?: string[];
  /**
   * A network namespace of its own too (only `lo` until `linkNodes`), so that several nodes can
   * each listen on Swarm's ports. Programs started with `spawnInNamespace` and
   * `execInNamespace` run in it. @default false: the host's network
   */
  network?: boolean;
}

const ENGINE_READY_MS = 60_000;
const DOCKERD_STOP_MS = 25_000; // dockerd gives running containers 15 s on shutdown
const PROCESS_STOP_MS = 10_000;
/** dockerd gives its containerd 10 s to stop before killing it. */
const CONTAINERD_STOP_MS = 15_000;

/**
 * The docker.io package ships a CLI matching its engine as /usr/bin/docker;
 * a newer standalone CLI may come first on PATH and could drop support for
 * this engine's older API version.
 */
const dockerCli = process.env.STOWAGE_TEST_DOCKER_CLI ?? (isExecutable('/usr/bin/docker') ? '/usr/bin/docker' : 'docker');

const liveNodes = new Set<DockerNode>();

/** Stop every node this process started and has not stopped yet. */
export async function stopAll(): Promise<void> {
  await Promise.all([...liveNodes].map((node) => node.stop()));
}

export async function startDockerNode(opts: StartOptions): Promise<DockerNode> {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/.test(opts.name)) {
    throw new Error(`invalid docker node name ${JSON.stringify(opts.name)}: use 1-32 letters, digits, '.', '_', '-'`);
  }
  const base = opts.baseDir ?? tmpdir();
  await reapOrphanedNodes(base);
  // Canonical, because it is compared with mount points from /proc/self/mountinfo before deleting.
  const dir = await realpath(await mkdtemp(join(base, `${NODE_DIR_PREFIX}${opts.name}-`)));
  // containerd's socket is the longest unix socket path a node uses; Linux caps them at 108 bytes.
  if (join(dir, 'exec/containerd/containerd.sock.ttrpc').length > 100) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(`docker node dir ${dir} is too long for unix socket paths; pass a shorter baseDir`);
  }
  for (const sub of ['plugins', 'data', 'exec', 'run/plugins', 'etc/plugins', 'containerd', 'logs', 'cli']) {
    await mkdir(join(dir, sub), { recursive: true });
  }
  for (const target of HOLDER_TARGETS) {
    await mkdir(target, { recursive: true });
  }
  const node = new Node(opts.name, dir, opts.network ?? false);
  liveNodes.add(node);
  try {
    await node.boot(opts.daemonArgs ?? []);
  } catch (error) {
    await node.stop().catch(() => undefined);
    throw error;
  }
  return node;
}

const CIDR = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/;

function checkedCidr(address: string): string {
  const parts = CIDR.exec(address);
  if (parts === null || parts.slice(1, 5).some((octet) => Number(octet) > 255) || Number(parts[5]) > 32) {
    throw new Error(`invalid address ${JSON.stringify(address)}: expected IPv4/prefix, e.g. 198.18.0.1/24`);
  }
  return address;
}

/**
 * Joins two nodes started with `network: true` by a veth pair whose ends exist only inside
 * their namespaces (`stowage0` in `a`, `stowage1` in `b`), with addresses `addressA` and
 * `addressB` (IPv4/prefix; 198.18.0.0/15 is the range reserved for such test networks). The
 * pair disappears with the namespaces when the nodes stop.
 */
export async function linkNodes(a: DockerNode, b: DockerNode, addressA: string, addressB: string): Promise<void> {
  for (const node of [a, b]) {
    if (!node.ownNetwork) throw new Error(`docker node ${node.name} shares the host's network; start it with network: true`);
  }
  const ends = [[a, 'stowage0', checkedCidr(addressA)], [b, 'stowage1', checkedCidr(addressB)]] as const;
  // Created straight inside the two namespaces: the host's network never sees either end.
  await execa('ip', ['link', 'add', 'stowage0', 'netns', String(a.holderPid), 'type', 'veth',
    'peer', 'name', 'stowage1', 'netns', String(b.holderPid)], { timeout: 10_000 });
  for (const [node, device, address] of ends) {
    await node.execInNamespace(['ip', 'address', 'add', address, 'dev', device]);
    await node.execInNamespace(['ip', 'link', 'set', device, 'up']);
  }
}

class Node implements DockerNode {
  readonly dockerHost: string;
  readonly pluginsDir: string;
  readonly specDir: string;
  readonly image = TEST_IMAGE;
  readonly timings: NodeTimings = { namespaceMs: 0, engineMs: 0, imageMs: 0, totalMs: 0 };
  private holder?: Holder;
  private dockerd?: NamespaceProcess;
  private readonly children = new Set<NamespaceProcess>();
  private logSeq = 0;
  private stopping?: Promise<void>;
  private daemonArgs: string[] = [];

  constructor(
    readonly name: string,
    readonly dir: string,
    readonly ownNetwork: boolean,
  ) {
    this.dockerHost = `unix://${join(dir, 'docker.sock')}`;
    this.pluginsDir = join(dir, 'plugins');
    this.specDir = join(dir, 'etc/plugins');
  }

  get holderPid(): number {
    if (this.holder?.pid === undefined) throw new Error(`docker node ${this.name} has no holder process`);
    return this.holder.pid;
  }

  async boot(daemonArgs: string[]): Promise<void> {
    const t0 = Date.now();
    await writeFile(join(this.dir, 'owner.json'), ownerRecord());
    this.holder = startHolder(this.dir, { network: this.ownNetwork });
    await holderReady(this.holder, `holder of docker node ${this.name}`);
    const t1 = Date.now();
    this.daemonArgs = daemonArgs;
    this.startDockerd();
    await this.waitForEngine();
    const t2 = Date.now();
    await this.importImage();
    const t3 = Date.now();
    Object.assign(this.timings, { namespaceMs: t1 - t0, engineMs: t2 - t1, imageMs: t3 - t2, totalMs: t3 - t0 });
  }

  async restartEngine(opts: { daemonArgs?: string[] } = {}): Promise<void> {
    await this.stopEngine();
    await this.startEngine(opts);
  }

  async stopEngine(): Promise<void> {
    if (this.dockerd === undefined || this.stopping !== undefined) throw new Error(`docker node ${this.name} is not running`);
    await terminate(this.dockerd, DOCKERD_STOP_MS);
    await this.forgetStoppedContainerd();
  }

  async startEngine(opts: { daemonArgs?: string[] } = {}): Promise<void> {
    if (this.stopping !== undefined) throw new Error(`docker node ${this.name} is stopping`);
    if (this.dockerd !== undefined && this.dockerd.exitCode === null && this.dockerd.signalCode === null) return;
    if (opts.daemonArgs !== undefined) this.daemonArgs = opts.daemonArgs;
    this.startDockerd();
    await this.waitForEngine();
  }

  /**
   * A dockerd that stopped its containerd leaves it to pid 1, which on these machines reaps late:
   * its pid file then names a zombie, which dockerd 20.10 takes for a running containerd (kill 0
   * succeeds), so the next dockerd waits for it and gives up with "timeout waiting for
   * containerd to start". Waits for that containerd to end, then removes the pid file of a
   * process that is gone (checked: without this the plain restart fails so). A containerd still
   * running after the wait is left alone.
   */
  private async forgetStoppedContainerd(): Promise<void> {
    const pidFile = join(this.dir, 'exec/containerd/containerd.pid');
    const pid = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim());
    if (!Number.isInteger(pid) || pid <= 0) return;
    const deadline = Date.now() + CONTAINERD_STOP_MS;
    while (Date.now() < deadline && (await pidAlive(pid))) await sleep(100);
    if (!(await pidAlive(pid))) await rm(pidFile, { force: true });
  }

  private startDockerd(): void {
    this.dockerd = this.spawnInNamespace(
      [
        'dockerd',
        '--iptables=false',
        '--ip6tables=false',
        '--bridge=none',
        '--data-root', join(this.dir, 'data'),
        '--exec-root', join(this.dir, 'exec'),
        '--pidfile', join(this.dir, 'docker.pid'),
        '-H', this.dockerHost,
        ...this.daemonArgs,
      ],
      { logFile: join(this.dir, 'dockerd.log') },
    );
    this.children.delete(this.dockerd); // stopped separately, after containers and before other children
  }

  async docker(args: string[], opts: RunOptions = {}): Promise<CommandResult> {
    const result = await execa(dockerCli, ['-H', this.dockerHost, ...args], {
      reject: false,
      input: opts.input,
      timeout: opts.timeoutMs ?? 60_000,
      // A private CLI config: no host contexts or credential helpers leak in.
      env: { DOCKER_CONFIG: join(this.dir, 'cli') },
    });
    return checked(`docker ${args.join(' ')}`, this.name, result, opts.reject ?? true);
  }

  spawnInNamespace(argv: string[], opts: SpawnOptions = {}): NamespaceProcess {
    const logFile = opts.logFile ?? join(this.dir, 'logs', `${basename(argv[0] ?? 'process')}-${++this.logSeq}.log`);
    // pdeathsig survives the execs (sh, nsenter, program), so the pid execa sees is the program's.
    const child = execa(
      'setpriv',
      ['--pdeathsig', 'TERM', 'sh', '-c', LOG_SCRIPT, 'sh', logFile, ...this.nsenterArgs(opts.cwd), ...argv],
      { ...spawnOptions, env: opts.env ?? {} },
    );
    this.children.add(child);
    void child.then(() => this.children.delete(child));
    return child;
  }

  async execInNamespace(
    argv: string[],
    opts: RunOptions & Omit<SpawnOptions, 'logFile'> = {},
  ): Promise<CommandResult> {
    const result = await execa('nsenter', [...this.nsenterArgs(opts.cwd), ...argv], {
      reject: false,
      input: opts.input,
      timeout: opts.timeoutMs ?? 60_000,
      env: opts.env ?? {},
    });
    return checked(argv.join(' '), this.name, result, opts.reject ?? true);
  }

  stop(): Promise<void> {
    this.stopping ??= this.teardown().finally(() => liveNodes.delete(this));
    return this.stopping;
  }

  private nsenterArgs(cwd: string | undefined): string[] {
    return nsenterArgs(this.holderPid, cwd ?? this.dir, this.ownNetwork);
  }

  private async waitForEngine(): Promise<void> {
    const deadline = Date.now() + ENGINE_READY_MS;
    let exited = false;
    void this.dockerd?.then(() => (exited = true));
    let last = '';
    while (Date.now() < deadline && !exited) {
      const probe = await this.docker(['version', '--format', '{{.Server.Version}}'], { reject: false, timeoutMs: 5_000 });
      if (probe.exitCode === 0) return;
      last = probe.stderr.trim();
      await sleep(100);
    }
    const log = await readFile(join(this.dir, 'dockerd.log'), 'utf8').catch(() => '');
    throw new Error(
      `dockerd of node ${this.name} ${exited ? 'exited' : `did not answer within ${ENGINE_READY_MS} ms`}` +
        ` (last probe: ${last}); dockerd.log tail, grpc chatter left out:\n${logTail(log, 20)}`,
    );
  }

  /** A registry-free image: static busybox plus one link per applet. */
  private async importImage(): Promise<void> {
    const root = join(this.dir, 'image-root');
    await mkdir(join(root, 'bin'), { recursive: true });
    for (const sub of ['etc', 'root', 'tmp', 'var/tmp']) await mkdir(join(root, sub), { recursive: true });
    for (const sub of ['tmp', 'var/tmp']) await chmod(join(root, sub), 0o1777);
    await copyFile('/bin/busybox', join(root, 'bin/busybox'));
    const applets = (await execa('/bin/busybox', ['--list'])).stdout.split('\n').filter((a) => a !== '' && a !== 'busybox');
    await Promise.all(applets.map((applet) => symlink('busybox', join(root, 'bin', applet))));
    await writeFile(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n');
    await writeFile(join(root, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
    const tarball = join(this.dir, 'image.tar');
    await execa('tar', ['--numeric-owner', '-C', root, '-cf', tarball, '.'], { timeout: 30_000 });
    await this.docker(['import', '--change', 'CMD ["sh"]', tarball, TEST_IMAGE], { timeoutMs: 60_000 });
    await rm(root, { recursive: true, force: true });
    await rm(tarball, { force: true });
  }

  private async teardown(): Promise<void> {
    const problems: string[] = [];
    const note = (what: string, error: unknown): void => {
      problems.push(`${what}: ${error instanceof Error ? error.message : String(error)}`);
    };
    const holderPid = this.holder?.pid;
    const namespace = holderPid === undefined ? undefined : await namespaceOf(holderPid);

    // Containers first, while any plugin spawned in the namespace can still answer Unmount.
    if (this.dockerd !== undefined && this.dockerd.exitCode === null) {
      await this.removeContainers().catch((error: unknown) => note('removing containers', error));
    }
    if (this.dockerd !== undefined) await terminate(this.dockerd, DOCKERD_STOP_MS).catch((e: unknown) => note('stopping dockerd', e));
    await Promise.all([...this.children].map((child) => terminate(child, PROCESS_STOP_MS))).catch((e: unknown) =>
      note('stopping spawned processes', e),
    );
    // Whatever is left (containerd shims, grandchildren of spawned programs) would keep the namespace alive.
    if (namespace !== undefined && holderPid !== undefined) {
      await killNamespace(namespace, holderPid).catch((e: unknown) => note('sweeping the namespace', e));
    }
    if (this.holder !== undefined) await terminate(this.holder, PROCESS_STOP_MS, 'SIGKILL').catch((e: unknown) => note('stopping the holder', e));

    const mounted = await unmountUnder(this.dir);
    if (mounted.length > 0) {
      problems.push(`still mounted, so ${this.dir} was left in place: ${mounted.join(', ')}`);
    } else if (process.env.STOWAGE_TEST_KEEP_NODES !== '1') {
      await rm(this.dir, { recursive: true, force: true, maxRetries: 3 }).catch((e: unknown) => note(`removing ${this.dir}`, e));
    }
    if (problems.length > 0) {
      process.stderr.write(`[stowage tests] docker node ${this.name} cleanup: ${problems.join('; ')}\n`);
    }
  }

  private async removeContainers(): Promise<void> {
    const ids = (await this.docker(['ps', '-aq'], { timeoutMs: 20_000 })).stdout.split('\n').filter(Boolean);
    if (ids.length > 0) await this.docker(['rm', '-f', '-v', ...ids], { timeoutMs: 90_000 });
  }
}

function logTail(log: string, lines: number): string {
  return log
    .split('\n')
    .filter((line) => !line.includes('module=grpc'))
    .slice(-lines)
    .join('\n');
}

function checked(
  what: string,
  node: string,
  result: { stdout: string; stderr: string; exitCode?: number; timedOut: boolean },
  reject: boolean,
): CommandResult {
  const exitCode = result.exitCode ?? -1;
  if (reject && (exitCode !== 0 || result.timedOut)) {
    const how = result.timedOut ? 'timed out' : `exited ${exitCode}`;
    throw new Error(`${what} on docker node ${node} ${how}: ${result.stderr.trim() || result.stdout.trim()}`);
  }
  return { stdout: result.stdout, stderr: result.stderr, exitCode };
}
