/**
 * Backups end to end with the real docker CLI, one private engine for the file: data written
 * by a container (files, a symlink, a hardlink, modes, owners, mtimes) is backed up twice,
 * removed, and restored into new volumes through both `stowage create --backup` and
 * `docker volume create -o backup=`; containers on the restored volumes see the same bytes and
 * metadata. A daemon killed (SIGKILL) during a backup leaves a repository that still verifies,
 * one killed during a restore leaves no volume once it is back, and a flipped byte in a pack
 * fails restore and verify, naming the chunk, leaving no volume.
 */
import { open, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callDaemon } from '../../src/drivers/cli/client.js';
import { controlEndpoints as api } from '../../src/drivers/control/endpoints.js';
import type { JobView } from '../../src/drivers/control/jobs.js';
import { assertCliBuilt, runCli, type CliResult } from '../helpers/daemon-process.js';
import { startDockerNode, stopAll, type DockerNode } from '../helpers/docker-node.js';
import { checkDocker, systemSuite } from '../helpers/requirements.js';
import { startStowageInNode, type StowageInNode } from '../helpers/stowage-in-node.js';

const skip = systemSuite('docker', checkDocker());

const DAEMON_ARGS = ['--node-id', 'backup-node'];

/** Everything a restore must bring back, as one text: per entry its type, mode, owner, size, mtime, target or checksum. */
const FINGERPRINT = [
  'cd /data',
  'find . -mindepth 1 | sort | while read -r f; do',
  '  stat -c "%n %F %a %u:%g %s %Y" "$f"',
  '  if [ -L "$f" ]; then echo "  -> $(readlink "$f")"; elif [ -f "$f" ]; then echo "  $(md5sum < "$f")"; fi',
  'done',
  '[ "$(stat -c %i sub/hello.txt)" = "$(stat -c %i sub/deep/hard2)" ] && echo "sub/hello.txt and sub/deep/hard2 are one file"',
  'echo "disk.img: $(du -k disk.img | cut -f1) KiB allocated"',
  // Names are printed as the docker CLI passes them on, which decodes bytes that are not UTF-8:
  // this line counts the latin1 name byte for byte.
  'echo "latin1 names: $(find . -name "$(printf \'caf\\351*\')" | wc -l)"',
].join('\n');

const WRITE_FIRST = [
  'set -e; cd /data',
  'mkdir -p sub/deep',
  'head -c 3000000 /dev/urandom > random.bin',
  // 12 KiB of data 8 MB in, in a 64 MiB file: the rest are holes, and must stay holes.
  'dd if=/dev/urandom of=disk.img bs=4096 count=3 seek=2000 2>/dev/null; truncate -s 64M disk.img',
  'echo hello > sub/hello.txt',
  ': > empty',
  'ln -s sub/hello.txt link',
  'ln sub/hello.txt sub/deep/hard2',
  'chmod 0755 random.bin; chmod 0640 sub/hello.txt; chmod 4711 empty',
  'chown 1234:5678 sub/hello.txt; chown -h 42:43 link',
  'touch -d "2020-01-02 03:04:05" random.bin; touch -d "2019-05-06 07:08:09" empty',
  'chmod 0700 sub/deep; touch -d "2018-01-01 00:00:00" sub/deep; touch -d "2017-01-01 00:00:00" sub',
  // A latin1 name, dated before 1970.
  'echo latin1 > "$(printf \'caf\\351.txt\')"; touch -d "1969-07-20 20:17:40" "$(printf \'caf\\351.txt\')"',
].join('\n');

const CHANGE = [
  'set -e; cd /data',
  'echo more >> sub/hello.txt',
  'rm empty',
  'head -c 100000 /dev/urandom > added.bin',
  'chmod 0600 added.bin; chown 7:8 added.bin',
  'touch -d "2016-01-01 00:00:00" sub',
].join('\n');

describe.skipIf(skip)('backups through the docker CLI', { timeout: 300_000 }, () => {
  let node: DockerNode;
  let stowage: StowageInNode;
  let repo: string;
  const urls: { first?: string; second?: string; big?: string } = {};
  const prints: { first?: string; second?: string } = {};
  const cli = (args: string[], timeoutMs = 120_000): Promise<CliResult> => runCli(['--socket', stowage.socket, ...args], { timeoutMs });
  const run = (args: string[]) => node.docker(['run', '--rm', '--network', 'none', ...args]);
  const fingerprint = async (volume: string) => (await run(['-v', `${volume}:/data`, node.image, 'sh', '-c', FINGERPRINT])).stdout;
  const volumes = async () => (await node.docker(['volume', 'ls', '-q'])).stdout.split('\n').filter(Boolean);
  const lastLine = (text: string) => text.trimEnd().split('\n').at(-1)!;
  const restartDaemon = async (logName: string) => {
    stowage = await startStowageInNode(node, { args: DAEMON_ARGS, logName });
  };

  /** Starts a job with --detach, waits until it moved data, then kills the daemon (SIGKILL). */
  async function killDuring(args: string[]): Promise<JobView> {
    const started = await cli([...args, '--detach']);
    expect(started.stderr).toBe('');
    const id = started.stdout.trim();
    let job: JobView;
    for (;;) {
      job = await callDaemon(stowage.socket, api.inspectJob, { id });
      if (job.state !== 'running') throw new Error(`job ${id} ended (${job.state}) before it could be interrupted: make the volume bigger`);
      if ((job.progress?.bytes ?? 0) > 0) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    await stowage.stop('SIGKILL');
    return job;
  }

  beforeAll(async () => {
    assertCliBuilt();
    node = await startDockerNode({ name: 'backup' });
    stowage = await startStowageInNode(node, { args: DAEMON_ARGS });
    repo = `vfs://${join(node.dir, 'repo')}`;
  });
  afterAll(async () => {
    await stowage?.stop('SIGKILL').catch(() => undefined);
    await stopAll();
  });

  it('backs a volume up twice and restores each backup into new volumes, by both CLIs, byte and metadata exact', async () => {
    await node.docker(['volume', 'create', '-d', 'stowage', 'src']);
    await run(['-v', 'src:/data', node.image, 'sh', '-c', WRITE_FIRST]);
    prints.first = await fingerprint('src');
    expect(prints.first).toContain('sub/hello.txt and sub/deep/hard2 are one file');
    expect(prints.first).toMatch(/^\.\/sub\/hello\.txt regular file 640 1234:5678 6 /m);
    expect(prints.first).toMatch(/^\.\/link symbolic link \d+ 42:43 /m);
    // The container's clock is UTC: 2020-01-02 03:04:05 is 1577934245.
    expect(prints.first).toMatch(/^\.\/random\.bin regular file 755 0:0 3000000 1577934245$/m);
    expect(prints.first).toMatch(/^\.\/empty regular empty file 4711 0:0 0 1557126489$/m);
    expect(prints.first).toContain('disk.img: 12 KiB allocated');
    expect(prints.first).toContain('latin1 names: 1');
    expect(prints.first).toMatch(/^\.\/caf\ufffd\.txt regular file 644 0:0 7 -14182940$/m);

    const first = await cli(['backup', 'create', 'src', '--dest', repo]);
    expect(first.exitCode, first.stderr).toBe(0);
    urls.first = lastLine(first.stdout);
    expect(urls.first).toMatch(/^vfs:\/\/\/.*\?volume=src&backup=/);
    // The first backup made the repository, and says so (a mistyped --dest would look like this).
    expect(first.stderr).toContain(`no backup repository was at ${repo}: this backup made a new one there`);
    await run(['-v', 'src:/data', node.image, 'sh', '-c', CHANGE]);
    prints.second = await fingerprint('src');
    expect(prints.second).not.toBe(prints.first);
    const second = await cli(['backup', 'create', 'src', '--dest', repo, '--json']);
    expect(second.stderr).toBe('');
    urls.second = (JSON.parse(second.stdout) as { url: string }).url;

    const listed = JSON.parse((await cli(['backup', 'list', '--dest', repo, '--volume', 'src', '--json'])).stdout) as { url: string; state: string }[];
    expect(listed.map((b) => [b.url, b.state])).toEqual([[urls.first, 'complete'], [urls.second, 'complete']]);
    await node.docker(['volume', 'rm', 'src']);
    expect(await volumes()).not.toContain('src');

    const viaCli = await cli(['create', 'from-first', '--backup', urls.first]);
    expect(viaCli.exitCode, viaCli.stderr).toBe(0);
    expect(viaCli.stdout.trim()).toBe('from-first');
    await node.docker(['volume', 'create', '-d', 'stowage', '-o', `backup=${urls.second}`, 'from-second']);
    const viaCli2 = await cli(['create', 'second-by-cli', '--backup', urls.second, '--json']);
    expect(viaCli2.exitCode, viaCli2.stderr).toBe(0);
    expect(JSON.parse(viaCli2.stdout)).toMatchObject({ created: true, volume: { name: 'second-by-cli' } });
    await node.docker(['volume', 'create', '-d', 'stowage', '-o', `backup=${urls.first}`, 'first-by-docker']);

    expect(await fingerprint('from-first')).toBe(prints.first);
    expect(await fingerprint('first-by-docker')).toBe(prints.first);
    expect(await fingerprint('from-second')).toBe(prints.second);
    expect(await fingerprint('second-by-cli')).toBe(prints.second);
    for (const url of [urls.first, urls.second]) {
      const verified = await cli(['backup', 'verify', url]);
      expect(verified.exitCode, verified.stderr).toBe(0);
      expect(verified.stdout).toMatch(/^vfs:.*: \d+ files?, \d+ chunks?, .* verified$/m);
    }
  });

  it('keeps the repository whole when the daemon is killed during a backup', async () => {
    await node.docker(['volume', 'create', '-d', 'stowage', 'big']);
    await run(['-v', 'big:/data', node.image, 'sh', '-c', 'for i in 1 2 3 4; do head -c 64000000 /dev/urandom > /data/part$i; done']);
    const interrupted = await killDuring(['backup', 'create', 'big', '--dest', repo]);
    expect(interrupted.kind).toBe('backup-create');
    await restartDaemon('stowage-after-backup-kill');

    // No complete backup of big came of it, and what was there verifies.
    const listed = JSON.parse((await cli(['backup', 'list', '--dest', repo, '--json'])).stdout) as { volume: string; state: string }[];
    expect(listed.filter((b) => b.volume === 'big' && b.state === 'complete')).toEqual([]);
    for (const url of [urls.first!, urls.second!]) {
      const verified = await cli(['backup', 'verify', url]);
      expect(verified.exitCode, verified.stderr).toBe(0);
    }
    // And it takes the next backup.
    const again = await cli(['backup', 'create', 'big', '--dest', repo], 280_000);
    expect(again.exitCode, again.stderr).toBe(0);
    urls.big = lastLine(again.stdout);
    expect((await cli(['backup', 'verify', urls.big])).exitCode).toBe(0);
  });

  it('leaves no volume when the daemon is killed during a restore', async () => {
    await killDuring(['create', 'big-copy', '--backup', urls.big!]);
    await restartDaemon('stowage-after-restore-kill');
    expect(await stowage.log()).toMatch(/removed volume big-copy: its restore from .* was interrupted/);
    expect(await volumes()).not.toContain('big-copy');
    const listed = JSON.parse((await cli(['list', '--json'])).stdout) as { name: string }[];
    expect(listed.map((v) => v.name)).not.toContain('big-copy');
    // The name is free again, and a restore that is not interrupted works.
    const restored = await cli(['create', 'big-copy', '--backup', urls.big!], 280_000);
    expect(restored.exitCode, restored.stderr).toBe(0);
    const sums = await run(['-v', 'big-copy:/data', '-v', 'big:/orig', node.image, 'sh', '-c', 'cd /data && md5sum part* > /tmp/s && cd /orig && md5sum -c /tmp/s']);
    expect(sums.stdout.split('\n').filter((l) => l.endsWith(': OK'))).toHaveLength(4);
  });

  it('fails verify and restore on a flipped byte in a pack, naming the chunk, and leaves no volume', async () => {
    const damaged = `vfs://${join(node.dir, 'damaged')}`;
    await node.docker(['volume', 'create', '-d', 'stowage', 'small']);
    await run(['-v', 'small:/data', node.image, 'sh', '-c', 'head -c 200000 /dev/urandom > /data/f']);
    const made = await cli(['backup', 'create', 'small', '--dest', damaged]);
    expect(made.exitCode, made.stderr).toBe(0);
    const url = lastLine(made.stdout);
    const packs = await filesUnder(join(node.dir, 'damaged', 'packs'));
    expect(packs.length).toBeGreaterThan(0);
    const sound = await cli(['backup', 'verify', damaged]);
    expect(sound.exitCode, sound.stderr).toBe(0);
    expect(sound.stdout).toMatch(new RegExp(`^${damaged}: 1 backup, 1 file, \\d+ chunks?, .* verified$`, 'm'));
    for (const pack of packs) await flipByte(pack, 100);

    // The whole repository's check names the chunk and the backup it breaks.
    const checked = await cli(['backup', 'verify', damaged]);
    expect(checked.exitCode).toBe(1);
    expect(checked.stderr).toMatch(/found 1 problem\(s\); backups that cannot be restored whole: small\/\S+: .*chunk [0-9a-f]{64} in packs\/.* is corrupt/);

    const verified = await cli(['backup', 'verify', url]);
    expect(verified.exitCode).toBe(1);
    expect(verified.stderr).toMatch(/chunk [0-9a-f]{64} in packs\/.* is corrupt/);
    const restored = await cli(['create', 'small-copy', '--backup', url]);
    expect(restored.exitCode).toBe(1);
    expect(restored.stderr).toMatch(/chunk [0-9a-f]{64} in packs\/.* is corrupt/);
    const byDocker = await node.docker(['volume', 'create', '-d', 'stowage', '-o', `backup=${url}`, 'small-copy2'], { reject: false });
    expect(byDocker.exitCode).not.toBe(0);
    expect(byDocker.stderr).toMatch(/chunk [0-9a-f]{64} in packs\/.* is corrupt/);
    expect(await volumes()).not.toContain('small-copy');
    expect(await volumes()).not.toContain('small-copy2');
    expect((JSON.parse((await cli(['list', '--json'])).stdout) as { name: string }[]).map((v) => v.name)).not.toContain('small-copy');
  });
});

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...await filesUnder(path));
    else if (entry.isFile() && (await stat(path)).size > 200) out.push(path);
  }
  return out;
}

/** Inverts one byte in place: the pack keeps its size, one chunk no longer matches its hash. */
async function flipByte(path: string, offset: number): Promise<void> {
  const file = await open(path, 'r+');
  try {
    const byte = Buffer.alloc(1);
    await file.read(byte, 0, 1, offset);
    byte[0] = byte[0]! ^ 0xff;
    await file.write(byte, 0, 1, offset);
  } finally {
    await file.close();
  }
}
