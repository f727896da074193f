/**
 * Start on boot with systemd: the shipped units as `stowage install-service` writes them, checked
 * by `systemd-analyze verify`, and the daemon served through `systemd-socket-activate` (which
 * binds the socket and passes it as fd 3, as systemd does), configured from the settings file.
 */
import { existsSync } from 'node:fs';
import { cp, lstat, mkdir, readFile, readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { terminate } from '../helpers/child-process-stop.js';
import {
  CLI_PATH, REPO_ROOT, assertCliBuilt, canConnect, cleanEnv, makeTempDir, removeTempDir, runCli, startDaemon, killAllDaemons,
} from '../helpers/daemon-process.js';
import { startDockerNode, stopAll, type DockerNode } from '../helpers/docker-node.js';
import { pluginCall } from '../helpers/plugin-client.js';
import { checkDocker, findExecutable, systemSuite, type ComponentCheck } from '../helpers/requirements.js';

function checkSystemdTools(): ComponentCheck {
  const missing = ['systemd-analyze', 'systemd-socket-activate'].filter((tool) => findExecutable(tool) === undefined);
  return missing.length === 0 ? { ok: true } : { ok: false, why: `missing ${missing.join(', ')} (apt-get install -y systemd)` };
}

const skipSystemd = systemSuite('systemd', checkSystemdTools());
const skipDocker = skipSystemd || systemSuite('docker', checkDocker());

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `systemd-analyze verify`: any output (an unknown key only warns, with rc 0) counts as a failure. */
async function verify(args: string[]): Promise<{ exitCode: number | undefined; output: string }> {
  const result = await execa('systemd-analyze', ['verify', ...args], { reject: false, all: true, env: { SYSTEMD_LOG_COLOR: '0' } });
  return { exitCode: result.exitCode, output: result.all.trim() };
}

/** The assignments an EnvironmentFile holds, as systemd reads the simple `NAME=value` lines. */
async function readEnvFile(path: string): Promise<Record<string, string>> {
  const vars: Record<string, string> = {};
  for (const line of (await readFile(path, 'utf8')).split('\n')) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line);
    if (m) vars[m[1]!] = m[2]!;
  }
  return vars;
}

/** The program systemd-socket-activate runs when the first connection comes, and its log. */
interface Activated {
  child: ResultPromise;
  log(): string;
}

/** Binds `socket` with systemd-socket-activate, passing `env` (-E) to `stowage daemon ARGS`. */
async function socketActivate(socket: string, env: Record<string, string>, args: string[], tool: string[] = []): Promise<Activated> {
  const child = execa('systemd-socket-activate', [
    ...tool, '-l', socket,
    ...Object.entries({ PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }).flatMap(([k, v]) => ['-E', `${k}=${v}`]),
    process.execPath, CLI_PATH, 'daemon', '--socket', socket, ...args,
  ], { reject: false, buffer: false, stdin: 'ignore', env: cleanEnv(), extendEnv: false });
  let log = '';
  child.stderr?.on('data', (chunk: Buffer) => { log += chunk.toString(); });
  child.stdout?.on('data', (chunk: Buffer) => { log += chunk.toString(); });
  const deadline = Date.now() + 10_000;
  while (!existsSync(socket)) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`systemd-socket-activate did not bind ${socket}: ${log}`);
    await sleep(20);
  }
  return { child, log: () => log };
}

describe.skipIf(skipSystemd)('the systemd units', () => {
  let tmp: string;
  beforeAll(async () => {
    assertCliBuilt();
    tmp = await makeTempDir('stowage-units-');
  });
  afterAll(() => removeTempDir(tmp));

  it('install-service writes units that systemd-analyze verify accepts without a word, pointing at this installation', async () => {
    const dest = join(tmp, 'installed');
    await mkdir(dest);
    const env = join(tmp, 'etc/stowage/stowage.env');
    const installed = await runCli(['install-service', '--dest', dest, '--environment-file', env]);
    expect(installed.exitCode, installed.stderr).toBe(0);
    expect(installed.stdout).toContain(`wrote ${join(dest, 'stowage.service')}`);
    expect(installed.stdout).toContain('systemctl daemon-reload\n  systemctl enable --now stowage.socket');
    const service = await readFile(join(dest, 'stowage.service'), 'utf8');
    expect(service).toMatch(new RegExp(`^ExecStart=${process.execPath} ${CLI_PATH} daemon$`, 'm'));
    expect(service).toMatch(new RegExp(`^EnvironmentFile=-${env}$`, 'm'));
    expect(await readFile(join(dest, 'stowage.socket'), 'utf8')).toMatch(/^ListenStream=\/run\/docker\/plugins\/stowage\.sock$/m);
    expect(await readFile(env, 'utf8')).toBe(await readFile(join(REPO_ROOT, 'systemd/stowage.env'), 'utf8'));
    expect((await lstat(env)).mode & 0o777).toBe(0o600);
    expect(await verify([join(dest, 'stowage.socket'), join(dest, 'stowage.service')])).toEqual({ exitCode: 0, output: '' });
  });

  it('the shipped units verify too, under a root holding the host\'s system units and /usr/local/bin/stowage', async () => {
    const root = join(tmp, 'root');
    await mkdir(join(root, 'usr/local/bin'), { recursive: true });
    await mkdir(join(root, 'usr/lib/systemd'), { recursive: true });
    await cp('/lib/systemd/system', join(root, 'usr/lib/systemd/system'), { recursive: true, verbatimSymlinks: true });
    await writeFile(join(root, 'usr/local/bin/stowage'), '#!/bin/sh\n', { mode: 0o755 });
    await cp(join(REPO_ROOT, 'systemd'), join(root, 'etc/systemd/system'), { recursive: true });
    expect(await verify([`--root=${root}`, 'stowage.socket', 'stowage.service'])).toEqual({ exitCode: 0, output: '' });
    // The check can fail: a misspelt key is only a warning with rc 0, and it is caught.
    const unit = join(root, 'etc/systemd/system/stowage.service');
    await writeFile(unit, (await readFile(unit, 'utf8')).replace('RestartSec=', 'RestartSecs='));
    const broken = await verify([`--root=${root}`, 'stowage.socket', 'stowage.service']);
    expect(broken.exitCode).toBe(0);
    expect(broken.output).toContain("Unknown key 'RestartSecs'");
  });

  it('install-service again changes nothing and keeps the operator\'s settings byte for byte', async () => {
    const dest = join(tmp, 'again');
    await mkdir(dest);
    const env = join(tmp, 'again.env');
    const args = ['install-service', '--dest', dest, '--environment-file', env];
    expect((await runCli(args)).exitCode).toBe(0);
    await writeFile(env, 'STOWAGE_NODE_ID=edited-by-operator\n');
    const second = await runCli(args);
    expect(second.exitCode, second.stderr).toBe(0);
    expect(second.stdout).toContain(`unchanged ${join(dest, 'stowage.service')}`);
    expect(second.stdout).toContain(`kept ${env} (already there; not overwritten)`);
    expect(await readFile(env, 'utf8')).toBe('STOWAGE_NODE_ID=edited-by-operator\n');
    expect((await readdir(dest)).sort()).toEqual(['stowage.service', 'stowage.socket']);
    // A unit edited by hand is replaced, and what was there is kept beside it and named.
    const service = join(dest, 'stowage.service');
    const shipped = await readFile(service, 'utf8');
    await writeFile(service, `${shipped}# edited by the operator\n`);
    const third = await runCli(args);
    expect(third.exitCode, third.stderr).toBe(0);
    const kept = /^replaced .*stowage\.service, which differed \(kept as (\S+stowage\.service\.bak-\d{8}T\d{6}Z); local changes belong in a drop-in: systemctl edit stowage\.service\)$/m.exec(third.stdout);
    expect(kept, third.stdout).not.toBeNull();
    expect(await readFile(kept![1]!, 'utf8')).toBe(`${shipped}# edited by the operator\n`);
    expect(await readFile(service, 'utf8')).toBe(shipped);
    expect(third.stdout).toContain('socket: /run/docker/plugins/stowage.sock');
  });

  it('install-service refuses bad input clearly and writes nothing', async () => {
    const dest = join(tmp, 'refused');
    await mkdir(dest);
    const env = join(tmp, 'refused-etc/stowage.env');
    const notExecutable = join(tmp, 'plain-file');
    await writeFile(notExecutable, '#!/bin/sh\n', { mode: 0o644 });
    // A unit that is a symlink: replacing it would write a file where the link was and leave its target as it was.
    const linked = join(tmp, 'linked');
    await mkdir(linked);
    await symlink(join(tmp, 'elsewhere.service'), join(linked, 'stowage.service'));
    const cases: Array<[string[], RegExp]> = [
      [['--dest', join(tmp, 'missing')], /--dest .*missing is not an existing directory/],
      [['--dest', 'relative/dir'], /--dest must be an absolute path/],
      [['--dest', dest, '--bin', 'stowage'], /--bin must be an absolute path/],
      [['--dest', dest, '--bin', '/usr/bin/stowage $(reboot)'], /--bin may hold only letters/],
      [['--dest', dest, '--bin', join(tmp, 'no-such-stowage')], /is not a file/],
      [['--dest', dest, '--bin', notExecutable], /is not executable/],
      [['--dest', linked], /stowage\.service exists and is not a regular file \(a symlink or a directory\); move it away first/],
    ];
    for (const [flags, message] of cases) {
      const result = await runCli(['install-service', '--environment-file', env, ...flags]);
      expect(result.exitCode, flags.join(' ')).toBe(1);
      expect(result.stderr).toMatch(message);
    }
    expect(await readdir(dest)).toEqual([]);
    expect(await readdir(linked)).toEqual(['stowage.service']);
    expect(existsSync(env)).toBe(false);
    const longSocket = await runCli(['--socket', `/run/${'s'.repeat(110)}.sock`, 'install-service', '--dest', dest, '--environment-file', env]);
    expect(longSocket.exitCode).toBe(1);
    expect(longSocket.stderr).toMatch(/--socket \/run\/s+\.sock is 120 bytes; a unix socket's path holds at most 107/);
    expect(await readdir(dest)).toEqual([]);
  });

  it('stowage.env lists every variable the daemon reads, commented out at its default', async () => {
    const text = await readFile(join(REPO_ROOT, 'systemd/stowage.env'), 'utf8');
    const listed = [...text.matchAll(/^#(STOWAGE_[A-Z_]+)=(.*)$/gm)].map((m) => [m[1], m[2]]);
    // What the daemon reads, as its own help lists it.
    const help = `${(await runCli(['daemon', '--help'])).stdout}${(await runCli(['--help'])).stdout}`;
    const read = [...new Set(help.match(/STOWAGE_[A-Z_]+/g))].sort();
    expect(read).toHaveLength(15);
    expect(listed.map(([name]) => name).sort()).toEqual(read);
    expect(Object.fromEntries(listed)).toMatchObject({
      STOWAGE_BACKEND: 'vfs', STOWAGE_ROOT: '/var/lib/stowage', STOWAGE_ON_REMOVE: 'delete', STOWAGE_HEARTBEAT_INTERVAL: '5',
      STOWAGE_STALE_AFTER: '30', STOWAGE_MOUNT_GRACE: '60', STOWAGE_RECONCILE_INTERVAL: '60',
      STOWAGE_SOCKET: '/run/docker/plugins/stowage.sock', STOWAGE_LOG_LEVEL: 'info',
    });
    // Nothing is set: the file only documents, so a later default applies unless an operator chose.
    expect(await readEnvFile(join(REPO_ROOT, 'systemd/stowage.env'))).toEqual({});
  });
});

describe.skipIf(skipSystemd)('the daemon socket-activated, configured from the settings file', { timeout: 60_000 }, () => {
  let tmp: string;
  let socket: string;
  let activated: Activated;
  let settings: Record<string, string>;
  const store = () => join(tmp, 'store');

  beforeAll(async () => {
    assertCliBuilt();
    tmp = await makeTempDir('stowage-sa-');
    socket = join(tmp, 'stowage.sock');
    const env = join(tmp, 'stowage.env');
    await writeFile(env, [
      await readFile(join(REPO_ROOT, 'systemd/stowage.env'), 'utf8'),
      'STOWAGE_NODE_ID=node-from-env',
      `STOWAGE_ROOT=${join(tmp, 'root')}`,
      `STOWAGE_OPTS=vfs.path=${store()}`,
      'STOWAGE_ON_REMOVE=retain',
      'STOWAGE_DOCKER_HOST=none',
      // Empty means unset: the default (60 s) applies.
      'STOWAGE_MOUNT_GRACE=',
      '',
    ].join('\n'));
    settings = await readEnvFile(env);
    activated = await socketActivate(socket, settings, []);
  });
  afterAll(async () => {
    if (activated) await terminate(activated.child, 10_000);
    await killAllDaemons();
    await removeTempDir(tmp);
  });

  it('nothing runs until the first connection; then plugin calls are served over the inherited socket', async () => {
    // systemd-socket-activate holds the socket; the daemon has not started, so made no state.
    expect(existsSync(join(tmp, 'root'))).toBe(false);
    expect(await pluginCall(socket, 'Plugin.Activate', {})).toMatchObject({ Implements: ['VolumeDriver'] });
    expect(activated.log()).toContain(`serving the socket systemd passed (fd 3, ${socket})`);
    expect(await pluginCall(socket, 'Create', { Name: 'sa-vol', Opts: {} })).not.toHaveProperty('Err');
    const mounted = await pluginCall(socket, 'Mount', { Name: 'sa-vol', ID: 'm1' });
    expect(mounted.Mountpoint).toBe(join(store(), 'sa-vol'));
    await writeFile(join(String(mounted.Mountpoint), 'kept'), 'data');
    expect(await pluginCall(socket, 'Unmount', { Name: 'sa-vol', ID: 'm1' })).not.toHaveProperty('Err');
  });

  it('the CLI works over the same socket and shows the settings from the file', async () => {
    const info = await runCli(['--socket', socket, 'info']);
    expect(info.exitCode, info.stderr).toBe(0);
    expect(JSON.parse(info.stdout)).toMatchObject({ node: 'node-from-env', backend: 'vfs', onRemove: 'retain', 'vfs.path': store() });
    const list = await runCli(['--socket', socket, 'list']);
    expect(list.stdout).toContain('sa-vol');
  });

  it('STOWAGE_ON_REMOVE=retain from the file retains the data on remove', async () => {
    expect(await pluginCall(socket, 'Remove', { Name: 'sa-vol' })).not.toHaveProperty('Err');
    const removed = await readdir(join(store(), '.stowage/removed'));
    expect(removed).toHaveLength(1);
    expect(removed[0]).toMatch(/^sa-vol@/);
    expect(await readFile(join(store(), '.stowage/removed', removed[0]!, 'kept'), 'utf8')).toBe('data');
  });

  it('a second daemon on the same path is refused before it touches any state', async () => {
    const second = await runCli(['daemon', '--socket', socket, '--root', join(tmp, 'second-root'),
      '--opt', `vfs.path=${join(tmp, 'second-store')}`, '--docker-host', 'none']);
    expect(second.exitCode).toBe(1);
    expect(second.stderr).toContain(`another daemon is already listening on ${socket}`);
    expect(existsSync(join(tmp, 'second-root'))).toBe(false);
    expect(existsSync(join(tmp, 'second-store'))).toBe(false);
    expect(await canConnect(socket)).toBe(true);
  });

  it('stopping the daemon leaves systemd\'s socket file in place', async () => {
    activated.child.kill('SIGTERM');
    const ended = await activated.child;
    expect(ended.exitCode).toBe(0);
    expect(activated.log()).toContain('SIGTERM received, stopping');
    expect((await lstat(socket)).isSocket()).toBe(true);
  });
});

describe.skipIf(skipSystemd)('what the daemon refuses when socket-activated, and its settings from the environment', { timeout: 60_000 }, () => {
  let tmp: string;
  beforeAll(async () => {
    assertCliBuilt();
    tmp = await makeTempDir('stowage-sx-');
  });
  afterAll(async () => {
    await killAllDaemons();
    await removeTempDir(tmp);
  });

  /** Activates the daemon by connecting once, and returns how it ended. */
  async function activateAndWait(socket: string, env: Record<string, string>, args: string[], tool: string[] = []) {
    const activated = await socketActivate(socket, env, args, tool);
    try {
      // Wakes the daemon; the connection itself is dropped when it refuses.
      await (tool.includes('--datagram')
        // util-linux's logger writes one datagram to a unix socket.
        ? execa('logger', ['--socket-errors=off', '-d', '-u', socket, 'wake'], { reject: false, timeout: 5_000 })
        : canConnect(socket));
      const ended = await activated.child;
      return { exitCode: ended.exitCode, log: activated.log() };
    } finally {
      await terminate(activated.child, 5_000);
    }
  }

  it('a socket bound elsewhere than --socket says: exit 1 naming both paths', async () => {
    const socket = join(tmp, 'bound.sock');
    const other = join(tmp, 'other.sock');
    const env = { STOWAGE_ROOT: join(tmp, 'r1'), STOWAGE_DOCKER_HOST: 'none' };
    const activated = await socketActivate(socket, env, ['--socket', other]);
    try {
      await canConnect(socket);
      const ended = await activated.child;
      expect(ended.exitCode).toBe(1);
      expect(activated.log()).toContain(`systemd passed a socket bound to ${socket}, but this daemon's socket is ${other}`);
      expect(existsSync(join(tmp, 'r1'))).toBe(false);
    } finally {
      await terminate(activated.child, 5_000);
    }
  });

  it('a datagram socket: exit 1 saying ListenStream= is needed', async () => {
    const result = await activateAndWait(join(tmp, 'dgram.sock'), { STOWAGE_ROOT: join(tmp, 'r2'), STOWAGE_DOCKER_HOST: 'none' }, [], ['--datagram']);
    expect(result.exitCode).toBe(1);
    expect(result.log).toContain('is not a stream socket; use ListenStream=');
    expect(existsSync(join(tmp, 'r2'))).toBe(false);
  });

  it('a flag overrides its environment variable', async () => {
    const socket = join(tmp, 'flag.sock');
    const daemon = await startDaemon(socket, ['--node-id', 'node-from-flag', '--opt', `vfs.path=${join(tmp, 'flag-store')}`], {
      env: { STOWAGE_NODE_ID: 'node-from-env', STOWAGE_ROOT: join(tmp, 'flag-root'), STOWAGE_DOCKER_HOST: 'none',
        STOWAGE_OPTS: `vfs.path=${join(tmp, 'env-store')}`, STOWAGE_ON_REMOVE: 'retain' },
    });
    try {
      const info = JSON.parse((await runCli(['--socket', socket, 'info'])).stdout) as Record<string, string>;
      expect(info).toMatchObject({ node: 'node-from-flag', 'vfs.path': join(tmp, 'flag-store'), onRemove: 'retain' });
    } finally {
      await daemon.stop();
    }
  });

  it('an invalid value in a variable fails with a message naming the variable, creating nothing', async () => {
    const cases: Array<[Record<string, string>, string]> = [
      [{ STOWAGE_ON_REMOVE: 'keep' }, "from env 'STOWAGE_ON_REMOVE' is invalid"],
      [{ STOWAGE_STALE_AFTER: '0' }, "from env 'STOWAGE_STALE_AFTER' is invalid"],
      [{ STOWAGE_NODE_ID: 'a/b' }, "from env 'STOWAGE_NODE_ID' is invalid"],
      [{ STOWAGE_OPTS: 'vfs.path' }, 'STOWAGE_OPTS'],
    ];
    for (const [env, message] of cases) {
      const result = await runCli(['daemon', '--socket', join(tmp, 'bad.sock')], {
        env: { STOWAGE_ROOT: join(tmp, 'bad-root'), STOWAGE_DOCKER_HOST: 'none', ...env },
      });
      expect(result.exitCode, JSON.stringify(env)).toBe(1);
      expect(result.stderr).toContain(message);
    }
    expect(existsSync(join(tmp, 'bad-root'))).toBe(false);
    expect(existsSync(join(tmp, 'bad.sock'))).toBe(false);
  });
});

describe.skipIf(skipDocker)('a real Docker engine using the socket-activated daemon', { timeout: 120_000 }, () => {
  let node: DockerNode;
  beforeAll(async () => {
    assertCliBuilt();
    node = await startDockerNode({ name: 'sysd' });
  });
  afterAll(() => stopAll());

  it('creates a volume on first use of the socket, and containers share its data', async () => {
    const store = join(node.dir, 'store');
    const settings = {
      PATH: process.env.PATH ?? '/usr/bin:/bin', STOWAGE_ROOT: join(node.dir, 'stowage-root'), STOWAGE_OPTS: `vfs.path=${store}`,
      STOWAGE_NODE_ID: 'sysd-node', STOWAGE_DOCKER_HOST: node.dockerHost,
    };
    // The engine's own view of the plugin directory: the path Docker and the unit both use.
    node.spawnInNamespace(['systemd-socket-activate', '-l', '/run/docker/plugins/stowage.sock',
      ...Object.entries(settings).flatMap(([k, v]) => ['-E', `${k}=${v}`]), process.execPath, CLI_PATH, 'daemon'],
    { logFile: join(node.dir, 'stowage.log') });
    const deadline = Date.now() + 10_000;
    while (!existsSync(join(node.pluginsDir, 'stowage.sock')) && Date.now() < deadline) await sleep(20);
    expect(existsSync(settings.STOWAGE_ROOT)).toBe(false);

    await node.docker(['volume', 'create', '-d', 'stowage', 'sa-docker']);
    await node.docker(['run', '--rm', '--network', 'none', '-v', 'sa-docker:/data', node.image, 'sh', '-c', 'echo hello > /data/greeting']);
    const read = await node.docker(['run', '--rm', '--network', 'none', '-v', 'sa-docker:/data', node.image, 'cat', '/data/greeting']);
    expect(read.stdout.trim()).toBe('hello');
    expect(await readFile(join(store, 'sa-docker/greeting'), 'utf8')).toBe('hello\n');
    const [inspected] = JSON.parse((await node.docker(['volume', 'inspect', 'sa-docker'])).stdout) as Array<{ Status: Record<string, string> }>;
    expect(inspected!.Status).toMatchObject({ createdBy: 'sysd-node', backend: 'vfs' });
    expect(await readFile(join(node.dir, 'stowage.log'), 'utf8')).toContain('serving the socket systemd passed (fd 3, /run/docker/plugins/stowage.sock)');
  });
});
