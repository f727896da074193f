import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../src/core/errors.js';
import { createBackend } from '../../src/backends/registry.js';
import { CommandError, ExecaCommandRunner, type CommandResult, type CommandRunner } from '../../src/core/command-runner.js';
import { GlusterCli } from '../../src/backends/glusterfs/gluster-cli.js';
import { silentLogger } from '../../src/core/logger.js';
import * as realFs from 'node:fs/promises';
import { isDeletingEntryName, isOwnBrick, layoutFor, planBricks } from '../../src/backends/glusterfs/bricks.js';
import { parseGlusterfsOptions } from '../../src/backends/glusterfs/glusterfs-options.js';
import { formatBytesApprox as humanBytes } from '../../src/core/options.js';
import { parseStatfs } from '../../src/backends/glusterfs/usage.js';
import { assertGlusterNameFits, glusterNameOf, longestGlusterName, stowageNameOf } from '../../src/backends/glusterfs/volume-naming.js';

const fixtureText = (name: string) => readFileSync(join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'gluster', name), 'utf8');
const volumeMode = { 'glusterfs.mode': 'volume', 'glusterfs.bricks': 'gl1:/data/b,gl2:/data/b', 'glusterfs.pool': 'state' };

describe('glusterfs daemon options', () => {
  it('defaults: subdir mode on this host, gluster\'s own socket, 20 s bound, quotas on', () => {
    expect(parseGlusterfsOptions({ 'glusterfs.pool': 'pool1' })).toEqual({
      servers: [hostname()], mode: 'subdir', pool: 'pool1', brickRoots: [], replica: undefined, disperse: undefined,
      brickForce: false, volumePrefix: 'stowage-', mountOptions: [], glusterdSocket: '/var/run/glusterd.socket',
      timeoutMs: 20_000, quota: true, quotaTimeoutS: 0,
    });
  });

  it('quota timeouts: strict (0 s) by default, relaxed up to gluster\'s 60 s bound on request', () => {
    expect(parseGlusterfsOptions({ 'glusterfs.pool': 'p', 'glusterfs.quotatimeout': '5' }).quotaTimeoutS).toBe(5);
    expect(parseGlusterfsOptions({ 'glusterfs.pool': 'p', 'glusterfs.quotatimeout': '60' }).quotaTimeoutS).toBe(60);
    expect(parseGlusterfsOptions({ ...volumeMode, 'glusterfs.quotatimeout': '0' }).quotaTimeoutS).toBe(0);
  });

  it('accepts Convoy\'s names: glusterfs.servers and glusterfs.defaultvolumepool, and the issue\'s glusterfs.volume', () => {
    const convoy = parseGlusterfsOptions({ 'glusterfs.servers': 'gl1, gl2,gl3', 'glusterfs.defaultvolumepool': 'vols' });
    expect(convoy).toMatchObject({ servers: ['gl1', 'gl2', 'gl3'], pool: 'vols' });
    expect(parseGlusterfsOptions({ 'glusterfs.volume': 'vols' }).pool).toBe('vols');
    expect(() => parseGlusterfsOptions({ 'glusterfs.pool': 'a', 'glusterfs.defaultvolumepool': 'b' })).toThrow(/disagree: a vs b/);
  });

  it('volume mode: brick roots, layout, prefix, force', () => {
    const options = parseGlusterfsOptions({ ...volumeMode, 'glusterfs.replica': '2', 'glusterfs.brickforce': 'true', 'glusterfs.volumeprefix': 'dock_' });
    expect(options).toMatchObject({
      mode: 'volume', replica: 2, brickForce: true, volumePrefix: 'dock_',
      brickRoots: [{ host: 'gl1', path: '/data/b' }, { host: 'gl2', path: '/data/b' }],
    });
  });

  it.each([
    [{ 'glusterfs.pol': 'x' }, /unknown glusterfs option "glusterfs.pol"/],
    [{}, /glusterfs.pool \(or glusterfs.defaultvolumepool\) is required: the gluster volume that holds the stowage volumes/],
    [{ 'glusterfs.pool': 'has.dot' }, /not a gluster volume name/],
    [{ 'glusterfs.pool': 'p', 'glusterfs.mode': 'lvm' }, /expected subdir or volume/],
    [{ 'glusterfs.pool': 'p', 'glusterfs.servers': 'gl1,bad host' }, /"bad host" is not a host name/],
    [{ 'glusterfs.pool': 'p', 'glusterfs.servers': ' , ' }, /glusterfs.servers is empty/],
    [{ 'glusterfs.pool': 'p', 'glusterfs.timeout': '0' }, /seconds from 1 to 100/],
    [{ 'glusterfs.pool': 'p', 'glusterfs.timeout': '500' }, /seconds from 1 to 100/],
    [{ 'glusterfs.pool': 'p', 'glusterfs.quota': 'yes' }, /expected true or false/],
    [{ 'glusterfs.pool': 'p', 'glusterfs.glusterdsocket': 'run/g.sock' }, /absolute path/],
    [{ 'glusterfs.pool': 'p', 'glusterfs.quotatimeout': '61' }, /glusterfs.quotatimeout="61": expected seconds from 0 .* to 60/],
    [{ 'glusterfs.pool': 'p', 'glusterfs.quotatimeout': '-1' }, /glusterfs.quotatimeout="-1": expected seconds/],
    [{ 'glusterfs.pool': 'p', 'glusterfs.quotatimeout': '5s' }, /glusterfs.quotatimeout="5s": expected seconds/],
    [{ 'glusterfs.pool': 'p', 'glusterfs.quotatimeout': '' }, /glusterfs.quotatimeout="": expected seconds/],
    [{ 'glusterfs.pool': 'p', 'glusterfs.quota': 'false', 'glusterfs.quotatimeout': '5' }, /conflicts with glusterfs.quota=false/],
    [{ 'glusterfs.pool': 'p', 'glusterfs.mountoptions': 'acl,log-file=/tmp/x' }, /log-file is set by stowage itself/],
    [{ 'glusterfs.pool': 'p', 'glusterfs.mountoptions': 'acl;rm -rf /' }, /expected name or name=value/],
    [{ 'glusterfs.pool': 'p', 'glusterfs.bricks': 'gl1:/b' }, /glusterfs.bricks only applies in volume mode/],
    [{ 'glusterfs.mode': 'volume', 'glusterfs.pool': 'state' }, /glusterfs.bricks is required in volume mode/],
    [{ 'glusterfs.mode': 'volume', 'glusterfs.bricks': 'gl1:/b' }, /glusterfs.pool is required in volume mode too: .*cluster state/],
    [{ ...volumeMode, 'glusterfs.bricks': 'gl1:relative' }, /expected host:\/absolute\/dir/],
    [{ ...volumeMode, 'glusterfs.bricks': 'gl1:/' }, /expected host:\/absolute\/dir/],
    [{ ...volumeMode, 'glusterfs.bricks': 'gl1:/a/../etc' }, /expected host:\/absolute\/dir/],
    [{ ...volumeMode, 'glusterfs.bricks': 'gl1:/with space' }, /expected host:\/absolute\/dir/],
    [{ ...volumeMode, 'glusterfs.bricks': 'localhost:/b' }, /refuses localhost bricks/],
    [{ ...volumeMode, 'glusterfs.bricks': 'gl1:/b,gl1:/b/' }, /same brick root twice/],
    [{ ...volumeMode, 'glusterfs.replica': '1' }, /from 2 to 16/],
    [{ ...volumeMode, 'glusterfs.replica': '2', 'glusterfs.disperse': '3' }, /exclude each other/],
    [{ ...volumeMode, 'glusterfs.volumeprefix': 'has.dot' }, /1-32 letters/],
    [{ ...volumeMode, 'glusterfs.pool': 'stowage-state' }, /glusterfs.pool=stowage-state lies inside the volume namespace of glusterfs.volumeprefix=stowage-/],
    [{ ...volumeMode, 'glusterfs.pool': 'st', 'glusterfs.volumeprefix': 's' }, /glusterfs.pool=st lies inside/],
  ])('refuses %j', (raw, message) => {
    expect(() => parseGlusterfsOptions(raw as Record<string, string>)).toThrow(expect.objectContaining({
      code: ErrorCodes.INVALID_OPTION, message: expect.stringMatching(message),
    }));
  });

  it('is registered as the glusterfs backend, validating options before any I/O', () => {
    const ctx = { nodeId: 'n', root: '/nonexistent-root', fs: realFs, runner: new ExecaCommandRunner(), log: silentLogger };
    expect(createBackend('glusterfs', ctx, { 'glusterfs.pool': 'p' }).name).toBe('glusterfs');
    expect(createBackend('glusterfs', ctx, volumeMode).capabilities).toMatchObject({ scope: 'global', createOptions: ['replica', 'disperse'] });
    expect(() => createBackend('glusterfs', ctx, {})).toThrow(/glusterfs.pool .*is required/);
    expect(createBackend('glusterfs', ctx, volumeMode).capabilities.clusterStateDir).toBe('/nonexistent-root/glusterfs/mnt/state/.stowage/cluster');
    expect(createBackend('glusterfs', ctx, { 'glusterfs.pool': 'p' }).capabilities.clusterStateDir).toBe('/nonexistent-root/glusterfs/mnt/p/.stowage/cluster');
  });
});

describe('volume mode naming and bricks', () => {
  it('maps stowage names to gluster names one-to-one, escaping "." and "_"', () => {
    const names = ['db', 'my.vol', 'my_dvol', 'a_b', 'a__b', 'x.y.z', 'v1-2'];
    const mapped = names.map((n) => glusterNameOf('stowage-', n));
    expect(mapped).toEqual(['stowage-db', 'stowage-my_dvol', 'stowage-my__dvol', 'stowage-a__b', 'stowage-a____b', 'stowage-x_dy_dz', 'stowage-v1-2']);
    expect(new Set(mapped).size).toBe(names.length);
    for (const [i, gluster] of mapped.entries()) {
      expect(gluster).toMatch(/^[A-Za-z0-9_-]+$/);
      expect(stowageNameOf('stowage-', gluster)).toBe(names[i]);
    }
    expect(stowageNameOf('stowage-', 'other-volume')).toBeUndefined();
    expect(stowageNameOf('stowage-', 'stowage-bad_escape')).toBeUndefined();
    expect(() => glusterNameOf('stowage-', '_'.repeat(128))).toThrow(expect.objectContaining({ code: ErrorCodes.INVALID_NAME }));
  });

  it('limits gluster names by the brick volume file names glusterd serves (client_per_brick/<volume>.client.<host>.<brick path>.vol)', () => {
    // 2 * n (the name, and again in the brick directory) + host + root + the fixed parts must stay within 230.
    const roots = [{ host: 'vm', path: '/var/tmp/hD/vbricks/r1' }];
    const longest = longestGlusterName(roots);
    const fixed = 1 + 'vm'.length + 1 + 'var/tmp/hD/vbricks/r1/'.length + '-00000000T000000Z-000000'.length + '.vol'.length;
    expect(longest).toBe(Math.floor((230 - fixed) / 2));
    expect(longestGlusterName([...roots, { host: 'a-much-longer-host-name', path: '/srv/bricks' }])).toBeLessThan(longest);
    expect(longestGlusterName([{ host: 'h', path: '/b' }])).toBeLessThanOrEqual(255);
    expect(() => assertGlusterNameFits('ok', 'x'.repeat(longest), 'stowage-', roots)).not.toThrow();
    expect(() => assertGlusterNameFits('long', 'x'.repeat(longest + 1), 'stowage-', roots)).toThrow(expect.objectContaining({
      code: ErrorCodes.INVALID_NAME, message: expect.stringMatching(new RegExp(`volume name long is too long .* gluster accepts at most ${longest} here`)),
    }));
  });

  it('chooses the layout from per-volume options first and checks the brick count', () => {
    const options = parseGlusterfsOptions({ ...volumeMode, 'glusterfs.replica': '2' });
    expect(layoutFor(options)).toEqual({ kind: 'replica', count: 2 });
    expect(layoutFor(parseGlusterfsOptions(volumeMode))).toEqual({ kind: 'distribute', count: 1 });
    expect(() => layoutFor(options, { disperse: '3' })).toThrow(/disperse 3 needs a multiple of 3 bricks, but glusterfs.bricks lists 2/);
    expect(() => layoutFor(options, { replica: '2', disperse: '3' })).toThrow(/exclude each other/);
    expect(() => layoutFor(options, { replica: 'two' })).toThrow(/replica="two"/);
  });

  it('places fresh brick directories per volume incarnation and only ever claims its own', () => {
    const roots = [{ host: 'gl1', path: '/data/b' }, { host: 'gl2', path: '/data/b' }];
    const first = planBricks(roots, 'stowage-db');
    expect(first).toEqual([expect.stringMatching(/^gl1:\/data\/b\/stowage-db-\d{8}T\d{6}Z-[0-9a-f]{6}$/), expect.stringMatching(/^gl2:/)]);
    expect(planBricks(roots, 'stowage-db')[0]).not.toBe(first[0]);
    const brick = (host: string, path: string) => ({ host, path, hostUuid: 'u', isArbiter: false });
    expect(isOwnBrick(brick('gl1', first[0]!.slice(4)), roots, 'stowage-db')).toBe(true);
    expect(isOwnBrick(brick('gl1', '/data/b'), roots, 'stowage-db')).toBe(false);
    expect(isOwnBrick(brick('gl1', '/data/b/stowage-dbx-1/../..'), roots, 'stowage-db')).toBe(false);
    expect(isOwnBrick(brick('gl1', '/elsewhere/stowage-db-1'), roots, 'stowage-db')).toBe(false);
    expect(isOwnBrick(brick('gl3', '/data/b/stowage-db-1'), roots, 'stowage-db')).toBe(false);
    expect(isOwnBrick(brick('gl1', '/data/b/other-1'), roots, 'stowage-db')).toBe(false);
    // Names another party (an administrator, or stowage for another volume) could have given.
    expect(isOwnBrick(brick('gl1', '/data/b/stowage-db-1'), roots, 'stowage-db')).toBe(false);
    expect(isOwnBrick(brick('gl1', planBricks(roots, 'stowage-db-x')[0]!.slice(4)), roots, 'stowage-db')).toBe(false);
    expect(isOwnBrick(brick('gl1', `${first[0]!.slice(4)}/..`), roots, 'stowage-db')).toBe(false);
  });

  it('purges only entries of .stowage-deleting named as stowage names bricks', () => {
    const [made] = planBricks([{ host: 'gl1', path: '/data/b' }], 'stowage-app__d');
    expect(isDeletingEntryName(made!.slice('gl1:/data/b/'.length), 'stowage-')).toBe(true);
    for (const entry of ['stowage-db-1', 'db-20260101T000000Z-abcdef', 'stowage-.-20260101T000000Z-abcdef', 'stowage--20260101T000000Z-abcdeg']) {
      expect(isDeletingEntryName(entry, 'stowage-')).toBe(false);
    }
  });

  it('formats sizes for Status and reads statfs output', () => {
    expect(humanBytes(52428800)).toBe('50MiB');
    expect(humanBytes(1234567)).toBe('1.18MiB');
    expect(humanBytes(512)).toBe('512B');
    expect(parseStatfs('4096 12800 12032\n')).toEqual({ totalBytes: 52428800, usedBytes: 3145728 });
    expect(parseStatfs('garbage')).toBeUndefined();
  });
});

describe('gluster CLI client', () => {
  const reply = (opRet: number, opErrstr = '') =>
    `<?xml version="1.0"?><cliOutput><opRet>${opRet}</opRet><opErrno>0</opErrno><opErrstr>${opErrstr}</opErrstr>` +
    '<volList><count>0</count></volList></cliOutput>';
  const cliWith = (answers: Array<CommandResult | Error>) => {
    const calls: string[][] = [];
    const runner: CommandRunner = {
      run: async (_program, args) => {
        calls.push([...args]);
        const next = answers.shift();
        if (next instanceof Error) throw next;
        return next ?? { stdout: reply(0), stderr: '', exitCode: 0 };
      },
    };
    const cli = new GlusterCli(runner, { socket: '/run/gd.sock', logFile: '/l', timeoutMs: 5_000, servers: ['gl1', 'gl2'], nodeId: 'n1' }, silentLogger);
    return { cli, calls };
  };

  it('passes the socket, script mode, XML and a timeout on every call', async () => {
    const { cli, calls } = cliWith([]);
    await cli.expect(['volume', 'list']);
    expect(calls[0]).toEqual(['--glusterd-sock=/run/gd.sock', '--log-file=/l', '--mode=script', '--xml', '--timeout=5', 'volume', 'list']);
  });

  it('retries while another peer holds the cluster lock, then gives gluster\'s answer', async () => {
    const { cli, calls } = cliWith([
      { stdout: reply(-1, 'Another transaction is in progress for v1. Please try again after some time.'), stderr: '', exitCode: 0 },
      { stdout: reply(0), stderr: '', exitCode: 0 },
    ]);
    expect((await cli.call(['volume', 'start', 'v1'])).ok).toBe(true);
    expect(calls).toHaveLength(2);
  });

  it('makes quota checking strict after a limit, touching only the timeouts that differ', async () => {
    const ok = { stdout: reply(0), stderr: '', exitCode: 0 };
    const info = { stdout: fixtureText('volume-info-quota-timeouts.xml').replace(/(hard-timeout<\/name>\s*<value>)0/, '$15'), stderr: '', exitCode: 0 };
    const { cli, calls } = cliWith([ok, info, ok]);
    await cli.limitUsage('fixpool', '/a', 1048576, 0);
    expect(calls.map((c) => c.slice(5))).toEqual([
      ['volume', 'quota', 'fixpool', 'limit-usage', '/a', '1048576'],
      ['volume', 'info', 'fixpool'],
      ['volume', 'quota', 'fixpool', 'hard-timeout', '0'],
    ]);
  });

  it('enables quota when off, then sets the timeouts; a refused timeout fails with gluster\'s reason', async () => {
    const ok = { stdout: reply(0), stderr: '', exitCode: 0 };
    const plainInfo = { stdout: fixtureText('volume-info-quota.xml'), stderr: '', exitCode: 0 };
    const { cli, calls } = cliWith([{ stdout: fixtureText('quota-limit-disabled.xml'), stderr: '', exitCode: 0 }, ok, ok, plainInfo, ok, ok]);
    await cli.limitUsage('fixpool', '/a', 1048576, 7);
    expect(calls.map((c) => c.slice(5, 9).join(' '))).toEqual([
      'volume quota fixpool limit-usage', 'volume quota fixpool enable', 'volume quota fixpool limit-usage', 'volume info fixpool',
      'volume quota fixpool soft-timeout', 'volume quota fixpool hard-timeout',
    ]);
    expect(calls.slice(-2).map((c) => c.at(-1))).toEqual(['7', '7']);
    const refused = cliWith([plainInfo, ok, { stdout: fixtureText('quota-hard-timeout-too-long.xml'), stderr: '', exitCode: 0 }]);
    await expect(refused.cli.quotaTimeouts('fixpool', 61)).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_COMMAND,
      message: expect.stringMatching(/^setting the quota hard-timeout of gluster volume fixpool to 61 s failed: '61' .* out of range \[0 - 60\]$/),
    });
  });

  it('turns no answer into E_BACKEND_UNAVAILABLE naming the node, socket and servers', async () => {
    const down = cliWith([{ stdout: 'Connection failed. Please check if gluster daemon is operational.', stderr: '', exitCode: 1 }]);
    await expect(down.cli.call(['volume', 'list'])).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE,
      message: 'gluster volume list on node n1 failed: glusterd is not reachable. Check that glusterd runs on this node ' +
        '(socket /run/gd.sock) and that it is a peer of the trusted pool of gl1, gl2 (gluster pool list)',
    });
    const hung = cliWith([new CommandError({ program: 'gluster', args: [], reason: 'timeout', stdout: '', stderr: '' },
      'gluster did not finish within 10000 ms and was stopped')]);
    await expect(hung.cli.call(['volume', 'list'])).rejects.toThrow(/no answer within 10 s/);
    const usage = cliWith([{ stdout: '', stderr: 'Volume name should not contain "." character.\nUsage: ...', exitCode: 1 }]);
    await expect(usage.cli.call(['volume', 'create', 'a.b'])).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_COMMAND, message: 'gluster volume create a.b was refused: Volume name should not contain "." character.',
    });
  });
});
