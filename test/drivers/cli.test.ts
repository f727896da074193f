/**
 * The built CLI (`dist/bin/stowage.mjs`, what `bin` and `npm start` run) as users run it: a real `stowage daemon` child
 * process on a unix socket in a temp dir, and one CLI process per command. `npm test` builds
 * dist/ first; run `npm run build` before running this file alone.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CLI_PATH, assertCliBuilt, killAllDaemons, makeTempDir, removeTempDir, runCli, startDaemon, type DaemonHandle,
} from '../helpers/daemon-process.js';
import { pluginCall } from '../helpers/plugin-client.js';
import { readMountRecords } from '../helpers/mount-records.js';

beforeAll(() => assertCliBuilt());

/** Mounts through the plugin protocol, writes a file into the volume, unmounts; returns the volume dir. */
async function writeIntoVolume(socket: string, name: string, file: string, content: string): Promise<string> {
  const mounted = await pluginCall(socket, 'Mount', { Name: name, ID: `write-${file}` });
  expect(mounted.Err).toBeUndefined();
  const dir = mounted.Mountpoint as string;
  await writeFile(join(dir, file), content);
  expect((await pluginCall(socket, 'Unmount', { Name: name, ID: `write-${file}` })).Err).toBeUndefined();
  return dir;
}

/** The path in "NAME (data kept at PATH)". */
function keptAt(stdout: string): string {
  const match = /data kept at ([^;]+?)(?:; .*)?\)\s*$/.exec(stdout.trim());
  expect(match, `no "data kept at" in: ${stdout}`).not.toBeNull();
  return match![1]!;
}

describe('stowage CLI against a running daemon', () => {
  let dir: string;
  let socket: string;
  let daemon: DaemonHandle;
  const cli = (...args: string[]) => runCli(['--socket', socket, ...args]);

  beforeAll(async () => {
    dir = await makeTempDir('stowage-cli-');
    socket = join(dir, 's.sock');
  });

  afterAll(async () => {
    await killAllDaemons();
    await removeTempDir(dir);
  });

  // One daemon serves this block; its tests run in order and share its volumes.
  describe('with the daemon up', () => {
    beforeAll(async () => {
      daemon = await startDaemon(socket, [
        '--root', join(dir, 'root'), '--opt', `vfs.path=${join(dir, 'vols')}`, '--node-id', 'cli-node-7',
        // Whatever engine this machine runs is not this test's: a remove would wait on its answers.
        '--docker-host', 'none',
      ]);
    });

    it('listens on --socket', async () => {
      expect((await stat(socket)).isSocket()).toBe(true);
      expect((await runCli(['--socket', socket, 'list'])).exitCode).toBe(0);
    });

    it('ends quietly, exit 0, when its reader closed the pipe first (stowage ls | head)', async () => {
      const child = spawn('node', [CLI_PATH, '--socket', socket, 'list'], { stdio: ['ignore', 'pipe', 'pipe'] });
      // The read end closed before the first write: that write gets EPIPE, every time.
      child.stdout.destroy();
      let stderr = '';
      child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
      const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
      expect(stderr).toBe('');
      expect(code).toBe(0);
    });

    it('creates a volume with --size', async () => {
      const result = await cli('create', 'webdata', '--size', '10M');
      expect(result.exitCode).toBe(0);
      expect(result.stdout).toContain('webdata');
      expect(result.stdout).not.toContain('already existed');
    });

    it('refuses two sizes for one volume (--size and --opt size=, or --size twice), creating nothing', async () => {
      const result = await cli('create', 'twosizes', '--size', '2G', '--opt', 'size=1G');
      expect(result.exitCode).toBe(1);
      expect(result.stderr).toContain('--size 2G and --opt size=1G say two sizes; give one');
      const repeated = await cli('create', 'twosizes', '--size', '1G', '--size', '2G');
      expect(repeated.exitCode).toBe(1);
      expect(repeated.stderr).toContain('--size is given twice, as 1G and 2G: give one');
      expect((JSON.parse((await cli('list', '--json')).stdout) as Array<{ name: string }>).map((v) => v.name)).not.toContain('twosizes');
    });

    it('refuses flags that only go with another one, changing nothing: create --detach without --backup, --force without --consistent', async () => {
      const detached = await cli('create', 'detached', '--detach');
      expect(detached.exitCode).toBe(1);
      expect(detached.stderr).toContain('--detach goes with --backup');
      expect((JSON.parse((await cli('list', '--json')).stdout) as Array<{ name: string }>).map((v) => v.name)).not.toContain('detached');
      for (const args of [['snapshot', 'create', 'webdata', 'forced', '--force'], ['backup', 'create', 'webdata', '--dest', 'vfs:///nowhere/repo', '--force']]) {
        const forced = await cli(...args);
        expect(forced.exitCode, args.join(' ')).toBe(1);
        expect(forced.stderr).toContain('--force goes with --consistent');
      }
      expect(JSON.parse((await cli('snapshot', 'list', 'webdata', '--json')).stdout)).toEqual([]);
    });

    it('accepts an identical create again and says the volume already existed', async () => {
      const result = await cli('create', 'webdata', '--size', '10M');
      expect(result.exitCode).toBe(0);
      expect(result.stdout).toContain('already existed');
    });

    it('refuses a create with a different size, naming the conflict', async () => {
      const result = await cli('create', 'webdata', '--size', '20M');
      expect(result.exitCode).toBe(1);
      expect(result.stderr).toContain('webdata');
      expect(result.stderr).toMatch(/different options/);
      expect(result.stderr).toContain('10MiB');
    });

    it('refuses an invalid name with exit 1', async () => {
      const result = await cli('create', '.secret');
      expect(result.exitCode).toBe(1);
      expect(result.stderr).toMatch(/invalid volume name/);
    });

    it('words mistakes in backup arguments as the command line has them, and asks the daemon nothing', async () => {
      for (const [args, message] of [
        [['backup', 'create', 'pg/', '--dest', 'vfs:///nowhere'], /^stowage: "pg\/": give VOLUME, or VOLUME\/SNAPSHOT with both names/],
        [['backup', 'create', '/snap', '--dest', 'vfs:///nowhere'], /give VOLUME, or VOLUME\/SNAPSHOT/],
        [['backup', 'create', 'pg', '--kind', 'blok', '--dest', 'vfs:///nowhere'], /--kind <kind>' argument 'blok' is invalid\. Allowed choices are file, block/],
        [['create', 'r3', '--backup', ''], /--backup <url>' argument '' is invalid\. expected a backup URL/],
      ] as const) {
        const result = await cli(...args);
        expect(result.exitCode, args.join(' ')).not.toBe(0);
        expect(result.stderr, args.join(' ')).toMatch(message);
      }
      expect((await cli('list', '--json')).stdout).not.toContain('"r3"');
    });

    it('lists the volume with its size in a table', async () => {
      const result = await cli('list');
      expect(result.exitCode).toBe(0);
      const lines = result.stdout.trim().split('\n');
      expect(lines[0]).toMatch(/NAME/);
      const row = lines.find((line) => line.split(/\s+/)[0] === 'webdata');
      expect(row, result.stdout).toBeDefined();
      expect(row).toContain('10MiB');
      expect(row).toContain('cli-node-7');
    });

    it('lists the volume as JSON with --json', async () => {
      const result = await cli('list', '--json');
      expect(result.exitCode).toBe(0);
      const volumes = JSON.parse(result.stdout) as Array<{ name: string; status: Record<string, string> }>;
      const volume = volumes.find((v) => v.name === 'webdata');
      expect(volume).toBeDefined();
      expect(volume!.status.size).toBe('10MiB');
    });

    it('inspects the volume as JSON with status.size', async () => {
      const result = await cli('inspect', 'webdata');
      expect(result.exitCode).toBe(0);
      const volume = JSON.parse(result.stdout) as { name: string; status: Record<string, string> };
      expect(volume.name).toBe('webdata');
      expect(volume.status.size).toBe('10MiB');
    });

    it('fails to inspect an unknown volume with exit 1', async () => {
      const result = await cli('inspect', 'nothere');
      expect(result.exitCode).toBe(1);
      expect(result.stderr).toContain('nothere');
    });

    it('shows the backend and the --node-id in info', async () => {
      const result = await cli('info');
      expect(result.exitCode).toBe(0);
      const info = JSON.parse(result.stdout) as Record<string, unknown>;
      expect(info.backend).toBe('vfs');
      expect(info.node).toBe('cli-node-7');
    });

    it('deletes with --keep-data and tells where the data was kept', async () => {
      const volumeDir = await writeIntoVolume(socket, 'webdata', 'hello.txt', 'hello from the test');
      const result = await cli('delete', 'webdata', '--keep-data');
      expect(result.exitCode).toBe(0);
      const kept = keptAt(result.stdout);
      expect(kept).not.toBe(volumeDir);
      expect(await readFile(join(kept, 'hello.txt'), 'utf8')).toBe('hello from the test');
      expect(existsSync(join(volumeDir, 'hello.txt'))).toBe(false);
      const listed = JSON.parse((await cli('list', '--json')).stdout) as Array<{ name: string }>;
      expect(listed.map((v) => v.name)).not.toContain('webdata');
    });

    it('deletes with --keep-data a volume with a snapshot and tells where the snapshot is kept, as a backup that lists', async () => {
      expect((await cli('create', 'snapped')).exitCode).toBe(0);
      await writeIntoVolume(socket, 'snapped', 'hello.txt', 'at the snapshot');
      expect((await cli('snapshot', 'create', 'snapped', 'first')).exitCode).toBe(0);
      const result = await cli('delete', 'snapped', '--keep-data');
      expect(result.exitCode).toBe(0);
      expect(await readFile(join(keptAt(result.stdout), 'hello.txt'), 'utf8')).toBe('at the snapshot');
      const command = /its 1 snapshot\(s\) kept as backups: stowage backup list --dest '([^']+)'\)$/.exec(result.stdout.trim());
      expect(command, result.stdout).not.toBeNull();
      const listed = await cli('backup', 'list', '--dest', command![1]!, '--json');
      expect(listed.exitCode, listed.stderr).toBe(0);
      expect((JSON.parse(listed.stdout) as Array<{ snapshot?: string; volume: string }>).map((b) => [b.snapshot, b.volume.startsWith('snapped..removed-')])).toEqual([['first', true]]);
      expect((await cli('create', 'snapped')).exitCode).toBe(0);
      expect(JSON.parse((await cli('snapshot', 'list', 'snapped', '--json')).stdout)).toEqual([]);
    });

    it('takes Convoy\'s command line: -s for the socket, delete -r keeps the data, backup list with the repository as its argument', async () => {
      expect((await runCli(['-s', socket, 'create', 'convoyish'])).exitCode).toBe(0);
      await writeIntoVolume(socket, 'convoyish', 'hello.txt', 'kept by -r');
      const deleted = await runCli(['-s', socket, 'delete', 'convoyish', '-r']);
      expect(deleted.exitCode, deleted.stderr).toBe(0);
      expect(await readFile(join(keptAt(deleted.stdout), 'hello.txt'), 'utf8')).toBe('kept by -r');
      const dest = `vfs://${join(dir, 'convoy-backups')}`;
      expect((await cli('create', 'convoyish')).exitCode).toBe(0);
      const made = await cli('backup', 'create', 'convoyish', '--dest', dest);
      expect(made.exitCode, made.stderr).toBe(0);
      const url = made.stdout.trim().split('\n').at(-1)!;
      const listed = await cli('backup', 'list', dest, '--json');
      expect(listed.exitCode, listed.stderr).toBe(0);
      expect((JSON.parse(listed.stdout) as Array<{ url: string }>).map((b) => b.url)).toEqual([url]);
      const two = await cli('backup', 'list', dest, '--dest', `${dest}-other`);
      expect(two.exitCode).toBe(1);
      expect(two.stderr).toContain('two repositories');
      const none = await cli('backup', 'list');
      expect(none.exitCode).toBe(1);
      expect(none.stderr).toContain('which repository?');
      expect((await cli('delete', 'convoyish')).exitCode).toBe(0);
    });

    it('creates a volume without a name as Convoy did (volume-<8 hex digits>, printed), plainly and from a backup', async () => {
      const plain = await cli('create', '--size', '10M');
      expect(plain.exitCode, plain.stderr).toBe(0);
      const name = plain.stdout.trim();
      expect(name).toMatch(/^volume-[0-9a-f]{8}$/);
      const inspected = JSON.parse((await cli('inspect', name)).stdout) as { name: string; status: { size?: string } };
      expect(inspected.name).toBe(name);
      expect(inspected.status.size).toContain('10');
      const json = JSON.parse((await cli('create', '--json')).stdout) as { created: boolean; volume: { name: string } };
      expect(json.created).toBe(true);
      expect(json.volume.name).toMatch(/^volume-[0-9a-f]{8}$/);
      expect(json.volume.name).not.toBe(name);

      await writeIntoVolume(socket, name, 'hello.txt', 'restored under a made name');
      const backedUp = await cli('backup', 'create', name, '--dest', `vfs://${join(dir, 'unnamed-backups')}`);
      expect(backedUp.exitCode, backedUp.stderr).toBe(0);
      const restored = await cli('create', '--backup', backedUp.stdout.trim().split('\n').at(-1)!);
      expect(restored.exitCode, restored.stderr).toBe(0);
      const copy = restored.stdout.trim().split('\n').at(-1)!;
      expect(copy).toMatch(/^volume-[0-9a-f]{8}$/);
      expect(copy).not.toBe(name);
      const mounted = await pluginCall(socket, 'Mount', { Name: copy, ID: 'read-copy' });
      expect(await readFile(join(mounted.Mountpoint as string, 'hello.txt'), 'utf8')).toBe('restored under a made name');
      expect((await pluginCall(socket, 'Unmount', { Name: copy, ID: 'read-copy' })).Err).toBeUndefined();
      for (const made of [name, json.volume.name, copy]) expect((await cli('delete', made)).exitCode).toBe(0);
    });

    it('deletes without --keep-data and keeps nothing', async () => {
      expect((await cli('create', 'scratch')).exitCode).toBe(0);
      const volumeDir = await writeIntoVolume(socket, 'scratch', 'tmp.txt', 'x');
      const result = await cli('delete', 'scratch');
      expect(result.exitCode).toBe(0);
      expect(result.stdout).not.toContain('data kept');
      expect(existsSync(join(volumeDir, 'tmp.txt'))).toBe(false);
    });

    it('fails to delete an unknown volume with exit 1 and a message', async () => {
      const result = await cli('delete', 'never-was');
      expect(result.exitCode).toBe(1);
      expect(result.stderr).toContain('never-was');
      expect(result.stderr).toMatch(/does not exist|not found/);
    });

    it('mounts by hand under labels, prints the path alone (or JSON), and unmounts with either spelling', async () => {
      expect((await cli('create', 'handy')).exitCode).toBe(0);
      const path = (await cli('mount', 'handy')).stdout;
      expect(path).toBe(JSON.parse((await cli('inspect', 'handy')).stdout).status.path);
      const json = JSON.parse((await cli('mount', 'handy', '--id', 'job-1', '--json')).stdout);
      expect(json).toEqual({ volume: 'handy', label: 'job-1', id: 'stowage-hand-job-1', mountpoint: path });
      expect((await cli('umount', 'handy')).stdout).toBe('handy (still mounted 1 time(s) on this node)');
      const bad = await cli('unmount', 'handy', '--id', '../job-1');
      expect(bad.exitCode).toBe(1);
      expect(bad.stderr).toMatch(/^stowage: invalid mount label "\.\.\/job-1"/);
      expect((await cli('unmount', 'handy', '--id', 'job-1')).stdout).toBe('handy');
      expect((await cli('delete', 'handy')).exitCode).toBe(0);
    });

    it('uses STOWAGE_SOCKET when --socket is absent', async () => {
      const result = await runCli(['create', 'via-env'], { env: { STOWAGE_SOCKET: socket } });
      expect(result.exitCode).toBe(0);
      const listed = await runCli(['list', '--json'], { env: { STOWAGE_SOCKET: socket } });
      expect((JSON.parse(listed.stdout) as Array<{ name: string }>).map((v) => v.name)).toContain('via-env');
    });

    it('prefers --socket over STOWAGE_SOCKET', async () => {
      const result = await runCli(['--socket', socket, 'info'], { env: { STOWAGE_SOCKET: join(dir, 'nowhere.sock') } });
      expect(result.exitCode).toBe(0);
    });

    it('stops on SIGTERM with exit code 0 and removes its socket', async () => {
      const result = await daemon.stop('SIGTERM');
      expect(result.exitCode).toBe(0);
      expect(result.signal).toBeUndefined();
      expect(existsSync(socket)).toBe(false);
    });
  });

  it('reports an unreachable daemon clearly, with exit 1', async () => {
    const missing = join(dir, 'no-daemon-here.sock');
    const result = await runCli(['--socket', missing, 'list']);
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toContain(missing);
    expect(result.stderr).toMatch(/cannot reach/);
    expect(result.stdout).toBe('');
  });
});

describe('stowage daemon flags', () => {
  let dir: string;

  beforeAll(async () => { dir = await makeTempDir('stowage-flags-'); });
  afterAll(async () => { await killAllDaemons(); await removeTempDir(dir); });

  it('accepts the Convoy aliases --drivers and --driver-opts', async () => {
    const vols = join(dir, 'convoy-vols');
    const socket = join(dir, 'convoy.sock');
    await startDaemon(socket, ['--root', join(dir, 'convoy-root'), '--drivers', 'vfs', '--driver-opts', `vfs.path=${vols}`]);
    const info = await runCli(['--socket', socket, 'info']);
    expect(info.exitCode).toBe(0);
    const parsed = JSON.parse(info.stdout) as Record<string, unknown>;
    expect(parsed.backend).toBe('vfs');
    expect(parsed['vfs.path']).toBe(vols);
    expect((await runCli(['--socket', socket, 'create', 'convoy-vol'])).exitCode).toBe(0);
    expect(await readdir(vols)).toContain('convoy-vol');
  });

  it('keeps data on a plain delete with --on-remove retain; on the default layout (the store inside the root) its kept snapshot deletes through the printed URL, a live one\'s is refused before any job', async () => {
    const socket = join(dir, 'retain.sock');
    await startDaemon(socket, ['--root', join(dir, 'retain-root'), '--on-remove', 'retain']);
    const cli = (...args: string[]) => runCli(['--socket', socket, ...args]);
    expect((await cli('create', 'kept')).exitCode).toBe(0);
    await writeIntoVolume(socket, 'kept', 'note.txt', 'retained');
    expect((await cli('snapshot', 'create', 'kept', 'first')).exitCode).toBe(0);
    const result = await cli('delete', 'kept');
    expect(result.exitCode).toBe(0);
    expect(await readFile(join(keptAt(result.stdout), 'note.txt'), 'utf8')).toBe('retained');
    const dest = /--dest '([^']+)'\)$/.exec(result.stdout.trim())?.[1];
    expect(dest, result.stdout).toBeDefined();
    const [kept] = JSON.parse((await cli('backup', 'list', '--dest', dest!, '--json')).stdout) as Array<{ url: string }>;
    const deleted = await cli('backup', 'delete', kept!.url);
    expect(deleted.exitCode, deleted.stderr).toBe(0);
    expect(JSON.parse((await cli('backup', 'list', '--dest', dest!, '--json')).stdout)).toEqual([]);

    expect((await cli('create', 'live')).exitCode).toBe(0);
    expect((await cli('snapshot', 'create', 'live', 'now')).exitCode).toBe(0);
    const { details } = JSON.parse((await cli('snapshot', 'inspect', 'live', 'now')).stdout) as { details: { backupId: string } };
    const refused = await cli('backup', 'delete', `${dest!.split('?')[0]}?volume=live&backup=${details.backupId}`);
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toMatch(/^stowage: the repository \S+ is inside stowage's own storage/);
    expect((JSON.parse((await cli('snapshot', 'list', 'live', '--json')).stdout) as Array<{ name: string }>).map((s) => s.name)).toEqual(['now']);
  });

  it('refuses --on-remove bogus with a clear message', async () => {
    const socket = join(dir, 'bogus.sock');
    const result = await runCli(['daemon', '--socket', socket, '--root', join(dir, 'bogus-root'), '--on-remove', 'bogus']);
    expect(result.exitCode).not.toBe(0);
    expect(result.stderr).toContain('--on-remove');
    expect(result.stderr).toContain('bogus');
    expect(result.stderr).toMatch(/delete/);
    expect(result.stderr).toMatch(/retain/);
    expect(existsSync(socket)).toBe(false);
  });

  it.each([
    ['--backend and --drivers together', ['--backend', 'vfs', '--drivers', 'glusterfs'], /--drivers.*cannot be used with.*--backend/],
    ['a zero --heartbeat-interval', ['--heartbeat-interval', '0'], /--heartbeat-interval.*'0'.*expected a number of seconds/],
    ['a --mount-grace that is not a number', ['--mount-grace', 'soon'], /--mount-grace.*'soon'.*expected a number of seconds/],
    ['a --heartbeat-interval that rounds to 0 ms (a spinning timer)', ['--heartbeat-interval', '0.0001'], /--heartbeat-interval.*'0.0001'.*from 0.1 to 86400/],
    ['a --stale-after in hexadecimal', ['--stale-after', '0x10'], /--stale-after.*'0x10'.*expected a number of seconds/],
    ['a --stale-after shorter than two heartbeats (a live node would look stale)', ['--heartbeat-interval', '20'], /--stale-after \(30 s\) must be at least twice --heartbeat-interval \(20 s\)/],
    ['a --node-id with a slash', ['--node-id', 'a/b'], /--node-id.*'a\/b'.*letters, digits/],
    ['a --docker-host that is not unix://', ['--docker-host', 'tcp://1.2.3.4:2375'], /--docker-host.*unix:\/\/\/path/],
    ['a relative --mount-dir', ['--mount-dir', 'mnt/stowage'], /--mount-dir.*'mnt\/stowage'.*absolute path/],
    ['a --mount-dir of /', ['--mount-dir', '/'], /--mount-dir.*'\/'.*other than \//],
    ['a --root of / (it would be made 0700 and filled with state)', ['--root', '/'], /--root.*'\/'.*other than \/.*of stowage's own/],
    ['a relative --root', ['--root', 'var/lib/stowage'], /--root.*'var\/lib\/stowage'.*absolute path/],
    ['a --driver-name in upper case', ['--driver-name', 'Stowage'], /--driver-name.*'Stowage'.*plugin name/],
  ])('refuses %s before starting anything', async (_label, flags, message) => {
    const socket = join(dir, 'refused.sock');
    const root = join(dir, 'refused-root');
    const result = await runCli(['daemon', '--socket', socket, '--root', root, ...flags]);
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toMatch(message);
    expect(existsSync(socket)).toBe(false);
    expect(existsSync(root)).toBe(false);
  });

  it('refuses --backend nope, naming the available backends', async () => {
    const socket = join(dir, 'nope.sock');
    const result = await runCli(['daemon', '--socket', socket, '--root', join(dir, 'nope-root'), '--backend', 'nope']);
    expect(result.exitCode).not.toBe(0);
    expect(result.stderr).toContain('nope');
    expect(result.stderr).toMatch(/available backends:.*\bvfs\b/);
    expect(existsSync(socket)).toBe(false);
  });

  it('refuses an unknown backend option, naming it', async () => {
    const socket = join(dir, 'badopt.sock');
    const result = await runCli(['daemon', '--socket', socket, '--root', join(dir, 'badopt-root'), '--opt', 'vfs.colour=red']);
    expect(result.exitCode).not.toBe(0);
    expect(result.stderr).toContain('vfs.colour');
  });

  it('snapshot commands create (named or not), list, inspect and delete through the daemon', { timeout: 120_000 }, async () => {
    const socket = join(dir, 'snap.sock');
    const daemon = await startDaemon(socket, ['--root', join(dir, 'snap-root')]);
    const cli = (...args: string[]) => runCli(['--socket', socket, ...args]);
    expect((await cli('create', 'snapvol')).exitCode).toBe(0);
    expect((await cli('snapshot', 'create', 'snapvol', 'first')).stdout).toBe('snapvol/first');
    const generated = JSON.parse((await cli('snapshot', 'create', 'snapvol', '--json')).stdout) as { name: string };
    expect(generated.name).toMatch(/^snap-\d{8}-\d{6}$/);
    // Convoy's form: `snapshot create VOLUME --name NAME`; two different names are refused, and nothing is made.
    expect((await cli('snapshot', 'create', 'snapvol', '--name', 'convoy')).stdout).toBe('snapvol/convoy');
    const twoNames = await cli('snapshot', 'create', 'snapvol', 'one', '--name', 'other');
    expect(twoNames.exitCode).toBe(1);
    expect(twoNames.stderr).toContain('two names for one snapshot: "one" and --name "other"');
    const listed = JSON.parse((await cli('snapshot', 'list', 'snapvol', '--json')).stdout) as { name: string }[];
    expect(listed.map((s) => s.name)).toEqual(['first', generated.name, 'convoy']);
    expect((await cli('snapshot', 'delete', 'snapvol', 'convoy')).exitCode).toBe(0);
    expect(JSON.parse((await cli('snapshot', 'inspect', 'snapvol', 'first')).stdout)).toMatchObject({ volume: 'snapvol', name: 'first' });
    // Convoy's `snapshot delete SNAP`: refused with the form to use, nothing deleted.
    for (const verb of ['delete', 'inspect']) {
      const alone = await cli('snapshot', verb, 'first');
      expect(alone.exitCode).toBe(1);
      expect(alone.stderr).toContain(`a snapshot is named within its volume: stowage snapshot ${verb} VOLUME NAME`);
    }
    // A backup of a snapshot that is not there fails as a request: no job is started for it.
    const noSnapshot = await cli('backup', 'create', 'snapvol/nosuch', '--dest', `vfs://${join(dir, 'snap-backups')}`);
    expect(noSnapshot.exitCode).toBe(1);
    expect(noSnapshot.stderr).toContain('volume snapvol has no snapshot nosuch');
    expect(noSnapshot.stderr).not.toContain('job');
    expect(JSON.parse((await cli('job', 'list', '--json')).stdout)).toEqual([]);
    const short = await cli('snapshot', 'inspect', 'snapvol', 'a');
    expect(short.stderr).toContain('invalid snapshot name "a"');
    const missing = await cli('snapshot', 'inspect', 'snapvol', 'nope');
    expect(missing.exitCode).toBe(1);
    expect(missing.stderr).toContain('volume snapvol has no snapshot nope');
    expect((await cli('snapshot', 'delete', 'snapvol', 'first', '--json')).stdout).toContain('"first"');
    expect((JSON.parse((await cli('snapshot', 'list', 'snapvol', '--json')).stdout) as { name: string }[]).map((s) => s.name)).toEqual([generated.name]);
    const badName = await cli('snapshot', 'list', '../etc');
    expect(badName.stderr).toMatch(/invalid volume name/);
    // A typo lists no snapshots of a volume that is not there: it says so.
    const unknown = await cli('snapshot', 'list', 'snapvl');
    expect(unknown.exitCode).toBe(1);
    expect(unknown.stderr).toMatch(/snapvl/);
    // Names from the time are to the second: snapshots taken within one get -2, -3, ... (up to
    // -4 here, when the burst lands in the second of the snapshot generated above).
    const burst = await Promise.all([1, 2, 3].map(() => cli('snapshot', 'create', 'snapvol', '--json')));
    for (const result of burst) expect(result.stderr).toBe('');
    const names = burst.map((r) => (JSON.parse(r.stdout) as { name: string }).name);
    expect(new Set([...names, generated.name]).size).toBe(4);
    for (const name of names) expect(name).toMatch(/^snap-\d{8}-\d{6}(-[234])?$/);
    await daemon.stop();
  });

  it('refuses a second daemon on the same --root, leaving the first one\'s mount records alone', async () => {
    const root = join(dir, 'shared-root');
    const first = await startDaemon(join(dir, 'first.sock'), ['--root', root]);
    expect((await pluginCall(first.socket, 'Create', { Name: 'locked' })).Err).toBeUndefined();
    expect((await pluginCall(first.socket, 'Mount', { Name: 'locked', ID: 'm1' })).Err).toBeUndefined();
    const second = await runCli(['daemon', '--socket', join(dir, 'second.sock'), '--root', root]);
    expect(second.exitCode).toBe(1);
    expect(second.stderr).toMatch(new RegExp(`another stowage daemon \\(pid ${first.pid}\\) uses the state root .*; stop it; or give this one its own --root`));
    const records = await readMountRecords(root);
    expect(records.locked?.ids.m1).toMatchObject({ count: 1 });
    await first.stop();
  });
});

describe('stowage daemon restart recovery', () => {
  let dir: string;

  beforeAll(async () => { dir = await makeTempDir('stowage-restart-'); });
  afterAll(async () => { await killAllDaemons(); await removeTempDir(dir); });

  it('remembers a mount across SIGKILL, until Docker unmounts its ID', async () => {
    const socket = join(dir, 's.sock');
    const args = ['--root', join(dir, 'root'), '--opt', `vfs.path=${join(dir, 'vols')}`];
    const first = await startDaemon(socket, args);
    expect((await runCli(['--socket', socket, 'create', 'survivor'])).exitCode).toBe(0);
    const mounted = await pluginCall(socket, 'Mount', { Name: 'survivor', ID: 'm1' });
    expect(mounted.Err).toBeUndefined();

    const killed = await first.stop('SIGKILL');
    expect(killed.signal).toBe('SIGKILL');
    expect(existsSync(socket)).toBe(true); // stale socket left behind, as after a crash

    await startDaemon(socket, args);
    const got = await pluginCall(socket, 'Get', { Name: 'survivor' });
    expect(got.Err).toBeUndefined();
    const volume = got.Volume as { Mountpoint?: string; Status: Record<string, string> };
    expect(volume.Status.mounts).toBe('1');
    expect(volume.Mountpoint).toBe(mounted.Mountpoint);
    expect((await pluginCall(socket, 'Path', { Name: 'survivor' })).Mountpoint).toBe(mounted.Mountpoint);

    const refused = await pluginCall(socket, 'Remove', { Name: 'survivor' });
    expect(refused.Err).toEqual(expect.stringContaining('mounted'));

    expect((await pluginCall(socket, 'Unmount', { Name: 'survivor', ID: 'm1' })).Err).toBeUndefined();
    const removed = await pluginCall(socket, 'Remove', { Name: 'survivor' });
    expect(removed.Err).toBeUndefined();
    expect((await pluginCall(socket, 'Get', { Name: 'survivor' })).Err).toEqual(expect.any(String));
  });
});

describe('stowage --help', () => {
  it('lists every command', async () => {
    const result = await runCli(['--help']);
    expect(result.exitCode).toBe(0);
    const commands = /Commands:\n([\s\S]*)$/.exec(result.stdout)?.[1] ?? '';
    const listed = commands.split('\n').map((line) => line.trim().split(/[\s|]/)[0]).filter(Boolean);
    expect(listed).toEqual(expect.arrayContaining(['daemon', 'create', 'delete', 'list', 'inspect', 'info', 'mount', 'umount']));
  });
});
