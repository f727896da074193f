/**
 * `stowage doctor` as users run it (the built CLI), on set-ups broken on purpose without a Docker
 * engine: a store shared but not declared, a stale node, a skewed clock, an open socket, a
 * nearly full --root. Each case checks the status and the advice printed.
 */
import { spawnSync } from 'node:child_process';
import { chmod, mkdir, open, readdir, rmdir, utimes, writeFile } from 'node:fs/promises';
import { statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  assertCliBuilt, killAllDaemons, makeTempDir, removeTempDir, runCli, startDaemon, type DaemonHandle,
} from '../helpers/daemon-process.js';
import { findExecutable } from '../helpers/requirements.js';
import { plantStaleNode } from '../helpers/stale-node.js';

beforeAll(() => assertCliBuilt());

interface Check { check: string; status: string; message: string; advice?: string }
interface Report { status: string; exitStatus: number; checks: Check[] }

async function doctor(args: string[]): Promise<{ exitCode: number | undefined; report: Report; text: string }> {
  const json = await runCli(['doctor', '--json', ...args], { timeoutMs: 60_000 });
  const text = await runCli(['doctor', ...args], { timeoutMs: 60_000 });
  expect(text.exitCode).toBe(json.exitCode);
  return { exitCode: json.exitCode, report: JSON.parse(json.stdout) as Report, text: text.stdout };
}

const find = (report: Report, name: string): Check => {
  const found = report.checks.find((c) => c.check === name);
  expect(found, `no check ${name} in ${JSON.stringify(report.checks.map((c) => c.check))}`).toBeDefined();
  return found!;
};

/** A fresh record of another node, written now, with the given clock offset. */
async function plantPeer(store: string, nodeId: string, clockOffsetMs: number, docker: object = { reachable: true }): Promise<void> {
  const dir = join(store, '.stowage', 'cluster', 'members');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFile(join(dir, `${nodeId}.json`), JSON.stringify({
    format: 2, nodeId, version: '0.1.0', host: nodeId, pid: 4343, startedAt: new Date().toISOString(), clockOffsetMs,
    containers: {}, docker,
  }), { mode: 0o600 });
}

describe('stowage doctor without an engine', { timeout: 120_000 }, () => {
  let dir: string;

  beforeAll(async () => {
    dir = await makeTempDir('stowage-doctor-');
  });
  afterAll(async () => {
    await killAllDaemons();
    await removeTempDir(dir);
  });

  describe('with a daemon on a vfs store that another, dead node also used', () => {
    let daemon: DaemonHandle;
    let socket: string;
    let opts: string[];

    beforeAll(async () => {
      socket = join(dir, 'a.sock');
      const store = join(dir, 'store-a');
      opts = ['--root', join(dir, 'root-a'), '--opt', `vfs.path=${store}`, '--docker-host', 'none', '--node-id', 'here'];
      daemon = await startDaemon(socket, opts.slice(0));
      // The daemon started alone (scope local); then the record of a node killed holding a mount shows up.
      await plantStaleNode(store, 'gone', 'data');
    });
    afterAll(async () => {
      await daemon.stop();
    });

    it('names the stale node, says the store is shared but not declared, and exits 1', async () => {
      const { exitCode, report, text } = await doctor(['--socket', socket, ...opts]);
      expect(exitCode).toBe(1);
      expect(report.exitStatus).toBe(1);
      expect(find(report, 'daemon')).toMatchObject({ status: 'ok', message: expect.stringMatching(/node here, backend vfs, scope local/) });
      expect(find(report, 'store-sharing')).toMatchObject({
        status: 'warn',
        message: expect.stringMatching(/is shared \(the store holds records of other nodes: gone\) but vfs.shared is not declared.*reports scope local: restart it/),
        advice: 'declare --opt vfs.shared=true (STOWAGE_OPTS) on every node of the store',
      });
      expect(find(report, 'nodes')).toMatchObject({
        status: 'fail',
        message: expect.stringMatching(/stale node\(s\), silent for more than 30 s: gone \(last heartbeat \d+ s ago, still referencing volumes\)/),
        advice: expect.stringMatching(/^start stowage on gone again; if it is gone for good: stowage node forget gone \(until then/),
      });
      expect(find(report, 'socket')).toMatchObject({ status: 'ok', message: `${socket} has mode 0600, owner uid 0` });
      expect(find(report, 'engine').status).toBe('warn');
      // One line per check, with the advice on it.
      expect(text).toMatch(/^fail +nodes +stale node\(s\).* -> start stowage on gone again/m);
      expect(text.trim().split('\n')).toHaveLength(report.checks.length);
    });

    it('takes the daemon\'s settings from STOWAGE_* variables too, and notices a socket others can use', async () => {
      await chmod(socket, 0o666);
      try {
        const result = await runCli(['--socket', socket, 'doctor', '--json'], {
          env: {
            STOWAGE_ROOT: join(dir, 'root-a'), STOWAGE_OPTS: `vfs.path=${join(dir, 'store-a')} vfs.shared=true`,
            STOWAGE_DOCKER_HOST: 'none', STOWAGE_NODE_ID: 'here',
          },
        });
        const report = JSON.parse(result.stdout) as Report;
        expect(find(report, 'socket')).toMatchObject({
          status: 'fail', message: expect.stringMatching(/has mode 0666: other local users can create, mount and delete volumes/),
          advice: expect.stringMatching(/^chmod 600 /),
        });
        // Declared shared: what the store shows matches.
        expect(find(report, 'store-sharing')).toMatchObject({ status: 'ok', message: 'declared shared (the store holds records of other nodes: gone)' });
        expect(result.exitCode).toBe(1);
      } finally {
        await chmod(socket, 0o600);
      }
    });

    it('without the daemon\'s store option says the checks look at a different store', async () => {
      const elsewhere = opts.map((o) => (o.startsWith('vfs.path=') ? `vfs.path=${join(dir, 'store-other')}` : o));
      const { report } = await doctor(['--socket', socket, ...elsewhere]);
      expect(find(report, 'daemon')).toMatchObject({
        status: 'warn', message: expect.stringContaining(`runs with vfs.path=${join(dir, 'store-a')}, not ${join(dir, 'store-other')}`),
      });
      // Left to its default, the store is somewhere else too.
      const { report: defaults } = await doctor(['--socket', socket, ...opts.filter((o, i) => o !== '--opt' && !opts[i - 1]?.startsWith('--opt'))]);
      expect(find(defaults, 'daemon')).toMatchObject({ status: 'warn', message: expect.stringMatching(/runs with vfs\.path=.*store-a, not .*root-a\/volumes/) });
    });

    it('with --node-id of another node says the checks look at a different set-up', async () => {
      const { report } = await doctor(['--socket', socket, ...opts.slice(0, -1), 'elsewhere']);
      expect(find(report, 'daemon')).toMatchObject({
        status: 'warn', message: expect.stringMatching(/runs with node here, not elsewhere/), advice: expect.stringMatching(/daemon's options/),
      });
    });
  });

  it('without a daemon reads the store: a skewed clock on a peer fails, vfs.shared=false on a shared store fails', async () => {
    const store = join(dir, 'store-b');
    await plantPeer(store, 'peer', 9_000);
    await plantPeer(store, 'slightly', -2_500);
    const base = ['--socket', join(dir, 'none.sock'), '--root', join(dir, 'root-b'), '--docker-host', 'none', '--node-id', 'here'];
    const { exitCode, report } = await doctor([...base, '--opt', `vfs.path=${store}`, '--opt', 'vfs.shared=true']);
    expect(exitCode).toBe(1);
    expect(find(report, 'daemon')).toMatchObject({ status: 'fail', advice: expect.stringMatching(/start it/) });
    expect(find(report, 'socket').status).toBe('skip');
    expect(find(report, 'nodes')).toMatchObject({ status: 'ok', message: '2 other node(s), all sending heartbeats: peer, slightly' });
    expect(find(report, 'clock')).toMatchObject({
      status: 'fail',
      message: expect.stringMatching(/peer \+9\.0 s, slightly -2\.5 s: beyond 6 s cluster locks can lapse unnoticed/),
      advice: 'enable time synchronisation (chrony, systemd-timesyncd) on peer, slightly',
    });
    const declaredLocal = await doctor([...base, '--opt', `vfs.path=${store}`, '--opt', 'vfs.shared=false']);
    expect(find(declaredLocal.report, 'store-sharing')).toMatchObject({
      status: 'fail', message: expect.stringMatching(/vfs.shared=false, but the store at .* is used by more than this node: the store holds records of other nodes: peer, slightly/),
      advice: expect.stringMatching(/declare --opt vfs.shared=true on every node/),
    });
    // Doctor wrote nothing: this node has no record in the store and --root was not made.
    await expect(statfs(join(dir, 'root-b'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  describe('when the store this node used is not at vfs.path', () => {
    /** This node's memory of its store, as the daemon's start writes it. */
    async function remember(root: string, store: string, storeId: string): Promise<void> {
      await mkdir(root, { recursive: true, mode: 0o700 });
      await writeFile(join(root, 'vfs-store.json'), JSON.stringify({ path: store, storeId }), { mode: 0o600 });
    }
    async function plantMarker(store: string, storeId: string): Promise<void> {
      await mkdir(join(store, '.stowage'), { recursive: true, mode: 0o700 });
      await writeFile(join(store, '.stowage', 'store.json'), JSON.stringify({ format: 1, storeId, createdAt: new Date().toISOString(), createdBy: 'here' }));
    }
    const optsOf = (root: string, store: string, shared: string) =>
      ['--root', root, '--docker-host', 'none', '--node-id', 'here', '--opt', `vfs.path=${store}`, '--opt', `vfs.shared=${shared}`];

    it('fails on an empty mount point, and on a missing path, with the words the daemon refuses to start with', async () => {
      const sock = join(dir, 'gone.sock');
      for (const shared of ['auto', 'true']) {
        // The store's filesystem is not mounted: what is left is the empty directory it was mounted on.
        const store = join(dir, `store-gone-${shared}`);
        const root = join(dir, `root-gone-${shared}`);
        await mkdir(store, { mode: 0o700 });
        await remember(root, store, 'a1b2c3d4e5f60718');
        const opts = optsOf(root, store, shared);
        const { exitCode, report } = await doctor(['--socket', sock, ...opts]);
        expect(exitCode).toBe(1);
        const problem = `vfs.path ${store} no longer holds stowage store a1b2c3d4e5f60718 that this node used before`;
        const remedy = `mount its filesystem there, then start stowage; if the store is really gone, remove ${join(root, 'vfs-store.json')} to start a new one`;
        expect(find(report, 'store')).toEqual({ check: 'store', status: 'fail', message: `${problem} (the daemon refuses to start)`, advice: remedy });
        // Nothing about sharing or space is said of the disk under the mount point.
        for (const check of ['store-sharing', 'store-space']) {
          expect(find(report, check)).toEqual({ check, status: 'skip', message: `no stowage store at ${store} (see the store check)` });
        }
        const daemon = await runCli(['--socket', sock, 'daemon', ...opts], { timeoutMs: 30_000 });
        expect(daemon.exitCode).toBe(1);
        expect(daemon.stderr).toContain(`stowage: ${problem}; ${remedy}`);
        expect(await readdir(store)).toEqual([]);
        await rmdir(store);
        expect(find((await doctor(['--socket', sock, ...opts])).report, 'store')).toMatchObject({
          status: 'fail', message: `vfs.path ${store} does not exist, but this node used stowage store a1b2c3d4e5f60718 there before (the daemon refuses to start)`, advice: remedy,
        });
      }
    });

    it('warns when vfs.path holds another store than the one this node used there, and is ok on the same one', async () => {
      const store = join(dir, 'store-swapped');
      const root = join(dir, 'root-swapped');
      await plantMarker(store, 'b0b0b0b0b0b0b0b0');
      await remember(root, store, 'a1a1a1a1a1a1a1a1');
      const opts = ['--socket', join(dir, 'none.sock'), ...optsOf(root, store, 'auto')];
      const { report } = await doctor(opts);
      expect(find(report, 'store')).toMatchObject({
        status: 'warn',
        message: `vfs.path ${store} now holds stowage store b0b0b0b0b0b0b0b0, not store a1a1a1a1a1a1a1a1 that this node used there before: ` +
          'this node now uses store b0b0b0b0b0b0b0b0 and its volumes (the daemon starts on it, and logs this)',
        advice: expect.stringMatching(/^if .* should hold store a1a1a1a1a1a1a1a1, check what is mounted there/),
      });
      expect(find(report, 'store-sharing').status).toBe('ok');
      await remember(root, store, 'b0b0b0b0b0b0b0b0');
      const same = (await doctor(opts)).report;
      expect(find(same, 'store')).toEqual({ check: 'store', status: 'ok', message: `stowage store b0b0b0b0b0b0b0b0 at ${store}, the one this node used before` });
      expect(find(same, 'store-space').status).toBe('ok');
    });
  });

  it('counts a node that left mount markers and no record as a stopped node, as a remove does', async () => {
    const store = join(dir, 'store-ghost');
    await plantPeer(store, 'peer', 0);
    const markers = join(store, '.stowage', 'cluster', 'mounts', 'ghost');
    await mkdir(markers, { recursive: true, mode: 0o700 });
    await writeFile(join(markers, 'data'), '', { mode: 0o600 });
    const base = ['--socket', join(dir, 'none.sock'), '--root', join(dir, 'root-ghost'), '--docker-host', 'none', '--node-id', 'here'];
    const { exitCode, report } = await doctor([...base, '--opt', `vfs.path=${store}`, '--opt', 'vfs.shared=true']);
    expect(exitCode).toBe(1);
    expect(find(report, 'nodes')).toMatchObject({
      status: 'fail',
      message: expect.stringMatching(/^stale node\(s\), silent for more than 30 s: ghost \(no node record, only mount markers, still referencing volumes\)$/),
      advice: expect.stringMatching(/stowage node forget ghost/),
    });
  });

  it('fails while a live peer\'s Docker engine has never answered: every remove is refused meanwhile', async () => {
    const store = join(dir, 'store-blind');
    await plantPeer(store, 'blind', 0, { configured: true, reachable: false, error: 'connect ENOENT /var/run/docker.sock' });
    await plantPeer(store, 'seeing', 0, { configured: true, reachable: false, error: 'timed out', listedAt: new Date().toISOString() });
    // A FIFO among the records would hang a plain open(); it is listed as invalid instead.
    expect(spawnSync('mkfifo', [join(store, '.stowage', 'cluster', 'members', 'fifo.json')]).status).toBe(0);
    const base = ['--socket', join(dir, 'none.sock'), '--root', join(dir, 'root-blind'), '--docker-host', 'none', '--node-id', 'here'];
    const { report } = await doctor([...base, '--opt', `vfs.path=${store}`, '--opt', 'vfs.shared=true']);
    expect(find(report, 'nodes')).toMatchObject({
      status: 'fail',
      message: expect.stringMatching(/^node\(s\) whose Docker engine has not answered since stowage started there: blind \(connect ENOENT \/var\/run\/docker.sock\); .* every volume remove is refused; invalid records skipped: fifo\.json \(not a regular file\)$/),
      advice: 'start Docker on blind, or point its --docker-host at the engine\'s socket',
    });
  });

  it.skipIf(process.getuid?.() !== 0 || !findExecutable('mount'))('fails when --root is nearly full (a small tmpfs filled up)', async () => {
    const root = join(dir, 'small-root');
    await mkdir(root);
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=4M', 'tmpfs', root]);
    try {
      const before = await statfs(root);
      const handle = await open(join(root, 'filler'), 'w');
      // 97% of the filesystem: past the 95% where doctor fails.
      await handle.write(Buffer.alloc(Math.floor(before.blocks * before.bsize * 0.97), 1));
      await handle.close();
      const base = ['--socket', join(dir, 'none.sock'), '--root', root, '--docker-host', 'none', '--node-id', 'here',
        '--opt', `vfs.path=${join(dir, 'store-c')}`];
      const { exitCode, report } = await doctor(base);
      expect(exitCode).toBe(1);
      expect(find(report, 'root-space')).toMatchObject({
        status: 'fail',
        message: expect.stringMatching(new RegExp(`^--root ${root} is nearly full: .* free \\(9[7-9]\\.\\d% used as df counts it`)),
        advice: expect.stringMatching(/^free space on the filesystem of .*mount records and volume state are written there/),
      });
      await execa('truncate', ['-s', String(Math.floor(before.blocks * before.bsize * 0.92)), join(root, 'filler')]);
      expect(find((await doctor(base)).report, 'root-space').status).toBe('warn');
    } finally {
      await execa('umount', [root]);
    }
  });

  it.skipIf(process.getuid?.() !== 0 || !findExecutable('mount') || !findExecutable('mkfs.ext4'))('counts used space as df does: a filesystem with half its blocks reserved for root and 30% written is not filling up', async () => {
    const root = join(dir, 'reserved-root');
    const image = join(dir, 'reserved.img');
    await mkdir(root);
    await execa('truncate', ['-s', '64M', image]);
    await execa('mkfs.ext4', ['-q', '-F', '-m', '50', image]);
    await execa('mount', ['-o', 'loop', image, root]);
    try {
      const before = await statfs(root);
      await writeFile(join(root, 'filler'), Buffer.alloc(Math.floor(before.blocks * before.bsize * 0.3), 1));
      const after = await statfs(root);
      const dfUsed = (after.blocks - after.bfree) / (after.blocks - after.bfree + after.bavail);
      // Counted with the reserve as used, this filesystem reads past the 90% warning line.
      expect(1 - after.bavail / after.blocks).toBeGreaterThan(0.9);
      const base = ['--socket', join(dir, 'none.sock'), '--root', root, '--docker-host', 'none', '--node-id', 'here',
        '--opt', `vfs.path=${join(dir, 'store-r')}`];
      const check = find((await doctor(base)).report, 'root-space');
      expect(check.status).toBe('ok');
      expect(check.message).toContain(`(${(dfUsed * 100).toFixed(1)}% used as df counts it`);
    } finally {
      await execa('umount', [root]);
    }
  });
});
