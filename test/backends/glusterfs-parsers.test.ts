import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../src/core/errors.js';
import {
  classifyCliText, parsePoolList, parseQuotaList, parseReply, parseVolumeInfo, parseVolumeList, parseVolumeStatus, quotaTimeoutOf,
  splitBrick,
} from '../../src/backends/glusterfs/parsers.js';
import { parseXml } from '../../src/backends/glusterfs/xml.js';
import { mountAt, parseProcMounts } from '../../src/core/proc-mounts.js';
import { explainMountLog } from '../../src/backends/glusterfs/mount-log.js';

/** Captured from gluster 10.3 by test/fixtures/gluster/capture.ts. */
const fixture = (name: string) =>
  readFileSync(join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'gluster', name), 'utf8');
const reply = (name: string) => parseReply(fixture(name));

describe('gluster XML envelope', () => {
  it('reads success and failure replies from opRet, not from the exit code', () => {
    expect(reply('volume-start-ok.xml')).toMatchObject({ ok: true, opRet: 0, opErrstr: '' });
    expect(reply('volume-info-missing.xml')).toMatchObject({ ok: false, opRet: -1, opErrno: 30806, opErrstr: 'Volume does not exist' });
    expect(reply('volume-create-exists.xml')).toMatchObject({ ok: false, opErrstr: 'Volume fixpool already exists' });
    expect(reply('volume-stop-not-started.xml')).toMatchObject({ ok: false, opErrstr: 'Volume fixec is not in the started state' });
    expect(reply('volume-start-already.xml')).toMatchObject({ ok: false, opErrstr: 'Volume fixec already started' });
    expect(reply('quota-limit-disabled.xml')).toMatchObject({ ok: false, opErrstr: 'Quota is disabled, please enable quota' });
    expect(reply('quota-list-all.xml')).toMatchObject({ ok: false, opErrstr: 'No quota configured on volume fixpool' });
  });

  it('treats any non-zero opRet as failure (quota limit-usage on a missing dir answers -2)', () => {
    const missing = reply('quota-limit-missing-dir.xml');
    expect(missing.opRet).toBe(-2);
    expect(missing.ok).toBe(false);
    expect(missing.opErrstr).toMatch(/No such file or directory/);
  });

  it('refuses text that is not a gluster reply, with a typed error', () => {
    for (const text of [fixture('cli-glusterd-down.txt'), '', '<cliOutput><opErrno>0</opErrno></cliOutput>', '<a><b></a>']) {
      expect(() => parseReply(text)).toThrow(expect.objectContaining({ code: ErrorCodes.BACKEND_COMMAND }));
    }
  });

  it('classifies the CLI\'s plain-text failures', () => {
    expect(classifyCliText(fixture('cli-glusterd-down.txt'))).toBe('glusterd-unreachable');
    expect(classifyCliText(fixture('cli-timeout.txt'))).toBe('timeout');
    expect(classifyCliText(fixture('volume-create-invalid-name.txt'))).toBe('usage');
    expect(classifyCliText('something else entirely')).toBe('unknown');
  });
});

describe('gluster output parsers', () => {
  it('volume list', () => {
    expect(parseVolumeList(reply('volume-list.xml').root)).toEqual(['fixdisp', 'fixec', 'fixpool']);
    expect(parseVolumeList(reply('volume-list-empty.xml').root)).toEqual([]);
  });

  it('volume info of several volumes: layout, state, bricks, options including stowage records', () => {
    const volumes = parseVolumeInfo(reply('volume-info-all.xml').root);
    expect(volumes.map((v) => v.name)).toEqual(['fixdisp', 'fixec', 'fixpool']);
    const [dist, ec, pool] = volumes;
    expect(dist).toMatchObject({ status: 'Created', started: false, type: 'Distribute', brickCount: 3, replicaCount: 1 });
    expect(ec).toMatchObject({ type: 'Disperse', disperseCount: 3, redundancyCount: 1, brickCount: 3 });
    expect(JSON.parse(ec!.options['user.stowage.record']!)).toMatchObject({ name: 'fix.ec', createdBy: 'node-a' });
    expect(pool).toMatchObject({ status: 'Started', started: true, type: 'Replicate', replicaCount: 2, brickCount: 2 });
    expect(pool!.bricks).toHaveLength(2);
    const [brick] = pool!.bricks;
    expect(brick!.host).toBe('vm');
    expect(brick!.path).toMatch(/^\/tmp\/stowage-gluster-[^/]+\/bricks\/fixpool-0$/);
    expect(brick!.hostUuid).toMatch(/^[0-9a-f-]{36}$/);
    expect(brick!.isArbiter).toBe(false);
  });

  it('volume info shows the quota switches and a failed lookup lists nothing', () => {
    const [pool] = parseVolumeInfo(reply('volume-info-quota.xml').root);
    expect(pool!.options['features.quota']).toBe('on');
    expect(pool!.options['features.quota-deem-statfs']).toBe('on');
    const missing = reply('volume-info-missing.xml');
    expect(missing.ok).toBe(false);
    expect(parseVolumeInfo(missing.root)).toEqual([]);
  });

  it('quota timeouts: set ones read as seconds, unset or unreadable ones as undefined', () => {
    const [strict] = parseVolumeInfo(reply('volume-info-quota-timeouts.xml').root);
    expect(quotaTimeoutOf(strict!, 'soft-timeout')).toBe(0);
    expect(quotaTimeoutOf(strict!, 'hard-timeout')).toBe(0);
    const [plain] = parseVolumeInfo(reply('volume-info-quota.xml').root);
    expect(quotaTimeoutOf(plain!, 'soft-timeout')).toBeUndefined();
    const other = (value: string) => ({ ...plain!, options: { 'features.hard-timeout': value } });
    expect(quotaTimeoutOf(other('5s'), 'hard-timeout')).toBe(5);
    expect(quotaTimeoutOf(other('1min'), 'hard-timeout')).toBeUndefined();
    expect(quotaTimeoutOf(other(''), 'hard-timeout')).toBeUndefined();
    expect(reply('quota-soft-timeout-ok.xml').ok).toBe(true);
    expect(reply('quota-hard-timeout-ok.xml').ok).toBe(true);
    expect(reply('quota-timeout-disabled.xml')).toMatchObject({ ok: false, opErrstr: 'Quota is disabled, please enable quota' });
    expect(reply('quota-hard-timeout-too-long.xml')).toMatchObject({ ok: false, opErrstr: expect.stringMatching(/out of range \[0 - 60\]/) });
  });

  it('volume status: bricks with ports and pids, daemons apart', () => {
    const [status] = parseVolumeStatus(reply('volume-status-started.xml').root);
    expect(status!.name).toBe('fixpool');
    expect(status!.bricks).toHaveLength(2);
    expect(status!.bricks.every((b) => b.online && b.path!.startsWith('/') && b.port! > 0 && b.pid! > 0)).toBe(true);
    expect(status!.daemons).toEqual([expect.objectContaining({ host: 'Self-heal Daemon', online: true })]);
    const detail = parseVolumeStatus(reply('volume-status-detail.xml').root);
    expect(detail[0]!.bricks).toHaveLength(2);
    const stopped = reply('volume-status-stopped.xml');
    expect(stopped).toMatchObject({ ok: false, opErrstr: 'Volume fixec is not started' });
  });

  it('quota list: limits, usage and N/A for a directory without a limit', () => {
    expect(parseQuotaList(reply('quota-list-path.xml').root)).toEqual([{
      path: '/a', hardLimit: 10485760, softLimitPercent: '80%', usedBytes: 3145728, availableBytes: 7340032,
      softLimitExceeded: false, hardLimitExceeded: false,
    }]);
    const [none] = parseQuotaList(reply('quota-list-nolimit.xml').root);
    expect(none).toMatchObject({ path: '/b', hardLimit: undefined, usedBytes: 0, availableBytes: undefined, hardLimitExceeded: undefined });
    expect(parseQuotaList(reply('quota-list-missing-path.xml').root)).toEqual([]);
  });

  it('pool list names the local peer localhost', () => {
    const peers = parsePoolList(reply('pool-list.xml').root);
    expect(peers).toEqual([{ uuid: expect.stringMatching(/^[0-9a-f-]{36}$/), hostname: 'localhost', connected: true }]);
  });

  it('refuses replies without the element it needs', () => {
    const empty = parseReply('<cliOutput><opRet>0</opRet></cliOutput>').root;
    for (const parse of [parseVolumeInfo, parseVolumeList, parseVolumeStatus, parseQuotaList, parsePoolList]) {
      expect(() => parse(empty)).toThrow(/cannot read/);
    }
  });

  it('splits brick specs and decodes XML entities and mixed content', () => {
    expect(splitBrick('gl1:/data/brick')).toEqual({ host: 'gl1', path: '/data/brick' });
    expect(splitBrick('[fe80::1]:/b')).toEqual({ host: '[fe80::1]', path: '/b' });
    expect(splitBrick('nohost')).toBeUndefined();
    const doc = parseXml('<?xml version="1.0"?><a x="1 &amp; 2">t &lt;3&#65;<b/>more</a>');
    expect(doc).toEqual({ name: 'a', attributes: { x: '1 & 2' }, text: 't <3Amore', children: [{ name: 'b', attributes: {}, children: [], text: '' }] });
  });
});

describe('/proc/mounts parser', () => {
  const text = [
    'proc /proc proc rw,relatime 0 0',
    'vm:/pool /var/lib/stowage/glusterfs/mnt/pool fuse.glusterfs rw,relatime,user_id=0 0 0',
    'vm:/pool/sub /mnt/with\\040space fuse.glusterfs rw 0 0',
    'tmpfs /var/lib/stowage/glusterfs/mnt/pool tmpfs rw 0 0',
  ].join('\n');

  it('reads every entry, unescaping octal sequences, and the last mount at a point wins', () => {
    const mounts = parseProcMounts(text);
    expect(mounts).toHaveLength(4);
    expect(mounts[2]).toEqual({ source: 'vm:/pool/sub', target: '/mnt/with space', fstype: 'fuse.glusterfs', options: ['rw'] });
    // A tmpfs mounted over the gluster mount hides it: the backend must not take that for gluster.
    expect(mountAt(mounts, '/var/lib/stowage/glusterfs/mnt/pool')?.fstype).toBe('tmpfs');
    expect(mountAt(mounts, '/var/lib/stowage')).toBeUndefined();
  });
});

describe('mount failure explanations from real client logs', () => {
  const explain = (file: string) => explainMountLog(fixture(file), 'fixpool', ['vm', 'vm2']);

  it('names the cause and what to do', () => {
    expect(explain('mount-log-no-subdir.txt')).toBe('directory /nosuchdir does not exist in gluster volume fixpool');
    expect(explain('mount-log-no-volume.txt')).toMatch(/gluster volume fixpool does not exist on vm, vm2/);
    expect(explain('mount-log-bad-host.txt')).toMatch(/no-such-host\.invalid does not resolve/);
    expect(explain('mount-log-volume-stopped.txt')).toMatch(/bricks of gluster volume fixpool are not running.*gluster volume start fixpool/);
    expect(explain('mount-log-glusterd-down.txt')).toMatch(/glusterd on vm, vm2 did not answer \(port 24007\)/);
  });

  it('falls back to the last error line without gluster\'s prefix, or nothing', () => {
    const log = '[2026-01-01 00:00:00.000000 +0000] E [MSGID: 1] [x.c:1:f] 0-x: something odd happened\n';
    expect(explainMountLog(log, 'v', ['h'])).toBe('0-x: something odd happened');
    expect(explainMountLog('', 'v', ['h'])).toBeUndefined();
  });
});
