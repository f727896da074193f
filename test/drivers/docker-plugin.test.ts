/**
 * The Docker volume plugin protocol, spoken over the real unix socket to the real server, with
 * a VolumeManager on the vfs backend in a temp directory. Requests carry no Content-Type, as
 * dockerd sends them, unless a test says otherwise. The control API, the shared error table
 * and the socket itself have their own files (control-api, http-errors, socket).
 */
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeTempDir } from '../helpers/daemon-process.js';
import { listedNames, pluginCall, socketRequest } from '../helpers/plugin-client.js';
import { pluginServerForSuite, startPluginServer, type PluginServer } from '../helpers/plugin-server.js';

let counter = 0;
const freshName = (prefix: string) => `${prefix}-${++counter}`;

const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

describe('Docker volume plugin over a unix socket (vfs backend)', () => {
  const server = pluginServerForSuite('stowage-plugin-');
  let socket: string;
  beforeAll(() => { socket = server().socket; });

  const call = (method: string, body?: unknown, contentType?: string) =>
    pluginCall(socket, method, body, contentType === undefined ? {} : { contentType });

  /** Creates a volume and fails the test unless Create answered without Err. */
  async function create(name: string, opts?: Record<string, string>): Promise<void> {
    const reply = await call('Create', { Name: name, Opts: opts ?? {} });
    expect(reply.Err ?? '').toBe('');
  }

  async function volsEntries(): Promise<string[]> {
    return (await readdir(server().vols)).sort();
  }

  it('answers Plugin.Activate with the VolumeDriver interface', async () => {
    const reply = await call('Plugin.Activate');
    expect(reply.Err).toBeUndefined();
    expect(reply.Implements).toEqual(['VolumeDriver']);
  });

  describe('Create', () => {
    it.each([
      ['no Content-Type (as dockerd)', undefined],
      ['text/plain', 'text/plain'],
      ['application/x-www-form-urlencoded', 'application/x-www-form-urlencoded'],
      ['application/json', 'application/json'],
    ])('reads a JSON body sent with %s', async (_label, contentType) => {
      const name = freshName('ctype');
      const reply = await call('Create', { Name: name, Opts: { size: '3M' } }, contentType);
      expect(reply.Err ?? '').toBe('');
      const got = await call('Get', { Name: name }, contentType);
      expect(got.Err).toBeUndefined();
      const volume = got.Volume as { Name: string; Status: Record<string, string> };
      expect(volume.Name).toBe(name);
      expect(volume.Status.size).toBe('3MiB');
    });

    it('applies size, uid, gid and mode from Opts', async () => {
      const name = freshName('opts');
      // 0770 differs from what mkdir leaves under the usual umask (022 or 027), so the chmod is observable.
      await create(name, { size: '10M', uid: '1234', gid: '2345', mode: '0770' });
      const got = await call('Get', { Name: name });
      expect((got.Volume as { Status: Record<string, string> }).Status.size).toBe('10MiB');
      const mounted = await call('Mount', { Name: name, ID: 'opts-check' });
      expect(mounted.Err).toBeUndefined();
      const info = await stat(mounted.Mountpoint as string);
      expect(info.isDirectory()).toBe(true);
      expect(info.mode & 0o777).toBe(0o770);
      expect(info.uid).toBe(1234);
      expect(info.gid).toBe(2345);
      expect((await call('Unmount', { Name: name, ID: 'opts-check' })).Err).toBeUndefined();
    });

    it('accepts Opts: null, as some Docker versions send when no -o is given', async () => {
      const name = freshName('nullopts');
      const reply = await call('Create', { Name: name, Opts: null });
      expect(reply.Err ?? '').toBe('');
      expect(await listedNames(socket)).toContain(name);
    });

    it('refuses an unknown option with an Err that names it, and creates nothing', async () => {
      const name = freshName('badopt');
      const before = await listedNames(socket);
      const entriesBefore = await volsEntries();
      const reply = await call('Create', { Name: name, Opts: { size: '1M', colour: 'blue' } });
      expect(reply.Err).toEqual(expect.stringContaining('colour'));
      expect(await listedNames(socket)).toEqual(before);
      expect(await volsEntries()).toEqual(entriesBefore);
      expect((await call('Get', { Name: name })).Err).toEqual(expect.any(String));
    });

    it('refuses a malformed option value with an Err naming the option', async () => {
      const name = freshName('badsize');
      const reply = await call('Create', { Name: name, Opts: { size: 'lots' } });
      expect(reply.Err).toEqual(expect.stringContaining('size'));
      expect(await listedNames(socket)).not.toContain(name);
    });

    it.each([
      ['a parent-directory escape', '../x'],
      ['a path separator', 'a/b'],
      ['a backslash', 'a\\b'],
      ['a leading dot', '.hidden'],
      ['a control character', 'bad\u0001name'],
      ['a newline', 'two\nlines'],
      ['200 characters', 'a'.repeat(200)],
      ['an empty string', ''],
    ])('refuses a name with %s and creates nothing', async (_label, name) => {
      const before = await listedNames(socket);
      const entriesBefore = await volsEntries();
      const reply = await call('Create', { Name: name, Opts: {} });
      expect(typeof reply.Err).toBe('string');
      expect((reply.Err as string).length).toBeGreaterThan(0);
      expect(await listedNames(socket)).toEqual(before);
      expect(await volsEntries()).toEqual(entriesBefore);
    });

    it('does not touch anything outside the volume directory for "../x"', async () => {
      const reply = await call('Create', { Name: '../escaped', Opts: {} });
      expect(reply.Err).toEqual(expect.any(String));
      expect(await readdir(server().dir)).not.toContain('escaped');
    });
  });

  describe('Get', () => {
    it('shows backend, size, createdAt and mounts in Status, and an RFC 3339 CreatedAt', async () => {
      const name = freshName('get');
      const startedAt = Date.now();
      await create(name, { size: '64M' });
      const reply = await call('Get', { Name: name });
      expect(reply.Err).toBeUndefined();
      const volume = reply.Volume as { Name: string; CreatedAt: string; Mountpoint?: string; Status: Record<string, string> };
      expect(volume.Name).toBe(name);
      expect(volume.CreatedAt).toMatch(RFC3339);
      const created = Date.parse(volume.CreatedAt);
      expect(created).toBeGreaterThanOrEqual(startedAt - 1_000);
      expect(created).toBeLessThanOrEqual(Date.now() + 1_000);
      expect(volume.Status.backend).toBe('vfs');
      expect(volume.Status.size).toBe('64MiB');
      expect(Date.parse(volume.Status.createdAt!)).toBe(created);
      expect(volume.Status.mounts).toBe('0');
      // Docker shows Mountpoint only for mounted volumes; an unmounted one has none.
      expect(volume.Mountpoint ?? '').toBe('');
    });

    it('answers Err for an unknown volume', async () => {
      const reply = await call('Get', { Name: freshName('nosuch') });
      expect(reply.Err).toEqual(expect.stringMatching(/\S/));
      expect(reply.Volume).toBeUndefined();
    });

    it('has no side effects: Get of an unknown name creates nothing', async () => {
      const name = freshName('probe');
      const entriesBefore = await volsEntries();
      await call('Get', { Name: name });
      expect(await volsEntries()).toEqual(entriesBefore);
      expect(await listedNames(socket)).not.toContain(name);
    });
  });

  describe('List', () => {
    it('lists created volumes by name, and forgets them after Remove', async () => {
      const a = freshName('list');
      const b = freshName('list');
      await create(a);
      await create(b);
      const reply = await call('List', {});
      expect(reply.Err).toBeUndefined();
      expect(Array.isArray(reply.Volumes)).toBe(true);
      const names = (reply.Volumes as Array<{ Name: string }>).map((v) => v.Name);
      expect(names).toEqual(expect.arrayContaining([a, b]));
      expect((await call('Remove', { Name: a })).Err).toBeUndefined();
      const after = await listedNames(socket);
      expect(after).not.toContain(a);
      expect(after).toContain(b);
    });

    it('answers List with an empty body, as dockerd may send it', async () => {
      const res = await socketRequest(socket, '/VolumeDriver.List');
      expect(res.status).toBe(200);
      expect(Array.isArray((res.json as { Volumes: unknown }).Volumes)).toBe(true);
    });
  });

  describe('Mount, Unmount and Path', () => {
    it('returns a directory of the volume that Path reports while mounted, and "" after', async () => {
      const name = freshName('mnt');
      await create(name);
      const unmountedPath = await call('Path', { Name: name });
      expect(unmountedPath.Err).toBeUndefined();
      expect(unmountedPath.Mountpoint).toBe('');

      const mounted = await call('Mount', { Name: name, ID: 'c1' });
      expect(mounted.Err).toBeUndefined();
      const mountpoint = mounted.Mountpoint as string;
      expect(mountpoint.startsWith(server().vols + sep)).toBe(true);
      expect((await stat(mountpoint)).isDirectory()).toBe(true);
      expect((await call('Path', { Name: name })).Mountpoint).toBe(mountpoint);
      const got = (await call('Get', { Name: name })).Volume as { Mountpoint?: string; Status: Record<string, string> };
      expect(got.Mountpoint).toBe(mountpoint);
      expect(got.Status.mounts).toBe('1');

      expect((await call('Unmount', { Name: name, ID: 'c1' })).Err).toBeUndefined();
      expect((await call('Path', { Name: name })).Mountpoint).toBe('');
    });

    it('needs two Unmounts when the same ID was mounted twice', async () => {
      const name = freshName('twice');
      await create(name);
      const first = await call('Mount', { Name: name, ID: 'same' });
      const second = await call('Mount', { Name: name, ID: 'same' });
      expect(second.Mountpoint).toBe(first.Mountpoint);
      expect(((await call('Get', { Name: name })).Volume as { Status: Record<string, string> }).Status.mounts).toBe('2');

      await call('Unmount', { Name: name, ID: 'same' });
      expect((await call('Path', { Name: name })).Mountpoint).toBe(first.Mountpoint);
      expect((await call('Remove', { Name: name })).Err).toEqual(expect.stringContaining('mounted'));

      await call('Unmount', { Name: name, ID: 'same' });
      expect((await call('Path', { Name: name })).Mountpoint).toBe('');
      expect((await call('Remove', { Name: name })).Err).toBeUndefined();
    });

    it('counts two IDs separately', async () => {
      const name = freshName('twoids');
      await create(name);
      const a = await call('Mount', { Name: name, ID: 'id-a' });
      const b = await call('Mount', { Name: name, ID: 'id-b' });
      expect(a.Err).toBeUndefined();
      expect(b.Mountpoint).toBe(a.Mountpoint);
      expect((await call('Unmount', { Name: name, ID: 'id-a' })).Err).toBeUndefined();
      // id-a again is now unknown: it must not release id-b's mount.
      expect((await call('Unmount', { Name: name, ID: 'id-a' })).Err).toBeUndefined();
      expect((await call('Path', { Name: name })).Mountpoint).toBe(a.Mountpoint);
      expect(((await call('Get', { Name: name })).Volume as { Status: Record<string, string> }).Status.mounts).toBe('1');
      expect((await call('Unmount', { Name: name, ID: 'id-b' })).Err).toBeUndefined();
      expect((await call('Path', { Name: name })).Mountpoint).toBe('');
    });

    it('refuses Mount without an ID', async () => {
      const name = freshName('noid');
      await create(name);
      const reply = await call('Mount', { Name: name });
      expect(reply.Err).toEqual(expect.stringMatching(/\S/));
      expect(reply.Mountpoint ?? '').toBe('');
      expect((await call('Path', { Name: name })).Mountpoint).toBe('');
    });

    it('refuses Mount of an unknown volume', async () => {
      const name = freshName('ghost');
      const reply = await call('Mount', { Name: name, ID: 'x' });
      expect(reply.Err).toEqual(expect.stringContaining(name));
      expect(await listedNames(socket)).not.toContain(name);
    });

    it('answers Unmount of an unknown ID without an error', async () => {
      const name = freshName('unk');
      await create(name);
      const reply = await call('Unmount', { Name: name, ID: 'never-mounted' });
      expect(reply.httpStatus).toBe(200);
      expect(reply.Err).toBeUndefined();
    });

    it('answers Path of an unknown volume with Err', async () => {
      const reply = await call('Path', { Name: freshName('nopath') });
      expect(reply.Err).toEqual(expect.stringMatching(/\S/));
    });
  });

  describe('Remove', () => {
    it('refuses while mounted, saying so, and keeps the data', async () => {
      const name = freshName('busy');
      await create(name);
      const { Mountpoint } = await call('Mount', { Name: name, ID: 'busy-1' });
      await writeFile(join(Mountpoint as string, 'keep.txt'), 'precious');
      const reply = await call('Remove', { Name: name });
      expect(reply.Err).toEqual(expect.stringContaining('mounted'));
      expect(await listedNames(socket)).toContain(name);
      expect(await readdir(Mountpoint as string)).toEqual(['keep.txt']);
      await call('Unmount', { Name: name, ID: 'busy-1' });
      expect((await call('Remove', { Name: name })).Err).toBeUndefined();
    });

    it('lets a re-created volume of the same name start empty', async () => {
      const name = freshName('again');
      await create(name);
      const first = await call('Mount', { Name: name, ID: 'r1' });
      await writeFile(join(first.Mountpoint as string, 'old.txt'), 'old data');
      await call('Unmount', { Name: name, ID: 'r1' });
      expect((await call('Remove', { Name: name })).Err).toBeUndefined();
      expect((await call('Get', { Name: name })).Err).toEqual(expect.any(String));

      await create(name);
      const second = await call('Mount', { Name: name, ID: 'r2' });
      expect(second.Err).toBeUndefined();
      expect(await readdir(second.Mountpoint as string)).toEqual([]);
      await call('Unmount', { Name: name, ID: 'r2' });
    });

    it('answers Remove of an unknown volume without Err, so Docker can drop its record', async () => {
      const reply = await call('Remove', { Name: freshName('gone') });
      expect(reply.httpStatus).toBe(200);
      expect(reply.Err).toBeUndefined();
    });

    it('still refuses Remove with an invalid name', async () => {
      const reply = await call('Remove', { Name: '../x' });
      expect(reply.Err).toEqual(expect.stringMatching(/\S/));
    });
  });

  it('answers Capabilities with Scope local for a non-shared vfs store', async () => {
    const reply = await call('Capabilities', {});
    expect(reply.Capabilities).toEqual({ Scope: 'local' });
  });

  describe('malformed requests', () => {
    const oversized = JSON.stringify({ Name: 'oversized', Opts: {}, padding: 'x'.repeat(1_500_000) });
    it.each([
      ['invalid JSON', '{"Name": "broken",'],
      ['a JSON array', '[{"Name": "in-array"}]'],
      ['a JSON string', '"just-a-string"'],
      ['JSON null', 'null'],
      ['a number as Name', '{"Name": 42, "Opts": {}}'],
      ['no Name', '{"Opts": {"size": "1M"}}'],
      ['a body over 1 MB', oversized],
    ])('Create with %s answers JSON with Err and changes nothing', async (_label, body) => {
      const before = await listedNames(socket);
      const entriesBefore = await volsEntries();
      const res = await socketRequest(socket, '/VolumeDriver.Create', body);
      expect(res.headers['content-type']).toMatch(/application\/json/);
      const reply = res.json as { Err?: unknown };
      expect(typeof reply.Err).toBe('string');
      expect((reply.Err as string).trim().length).toBeGreaterThan(0);
      expect(await listedNames(socket)).toEqual(before);
      expect(await volsEntries()).toEqual(entriesBefore);
    });

    it.each([
      ['invalid JSON', (name: string) => `{"Name": "${name}"`],
      ['a JSON array', (name: string) => JSON.stringify([{ Name: name }])],
      ['a number as Name', () => '{"Name": 7}'],
      ['a body over 1 MB', (name: string) => JSON.stringify({ Name: name, padding: 'y'.repeat(1_500_000) })],
    ])('Remove with %s answers Err and removes nothing', async (_label, makeBody) => {
      const name = freshName('survivor');
      await create(name);
      const res = await socketRequest(socket, '/VolumeDriver.Remove', makeBody(name));
      expect(typeof (res.json as { Err?: unknown }).Err).toBe('string');
      expect(await listedNames(socket)).toContain(name);
    });

    it.each(['Create', 'Remove', 'Mount', 'Unmount', 'Path', 'Get'])(
      '%s with an empty body (Docker\'s retry after the daemon restarted) says to run the command again, and changes nothing',
      async (call) => {
        const name = freshName('kept');
        await create(name);
        const entriesBefore = await volsEntries();
        const res = await socketRequest(socket, `/VolumeDriver.${call}`, '');
        expect(res.status).toBe(400);
        expect((res.json as { Err?: unknown }).Err).toMatch(/empty body, so it names no volume\. Docker sends such a body when it retries .* run the command again/);
        expect(await volsEntries()).toEqual(entriesBefore);
        expect(await listedNames(socket)).toContain(name);
      });

    it('answers an unknown path with 404 and a JSON Err', async () => {
      const res = await socketRequest(socket, '/VolumeDriver.Explode', { Name: 'x' });
      expect(res.status).toBe(404);
      expect(res.headers['content-type']).toMatch(/application\/json/);
      expect((res.json as { Err?: unknown }).Err).toEqual(expect.stringMatching(/\S/));
    });

    it('answers GET on a plugin path with 404 JSON, since the protocol is POST only', async () => {
      const res = await socketRequest(socket, '/VolumeDriver.List', undefined, { method: 'GET' });
      expect(res.status).toBe(404);
      expect((res.json as { Err?: unknown }).Err).toEqual(expect.any(String));
    });
  });
});

describe('Capabilities of a shared vfs store', () => {
  let dir: string;
  let srv: PluginServer | undefined;

  beforeAll(async () => {
    dir = await makeTempDir('stowage-shared-');
    await mkdir(join(dir, 'vols'));
    srv = await startPluginServer(dir, { 'vfs.shared': 'true' });
  });

  afterAll(async () => {
    await srv?.close();
    await removeTempDir(dir);
  });

  it('answers Scope global when vfs.shared=true', async () => {
    const reply = await pluginCall(srv!.socket, 'Capabilities', {});
    expect(reply.Capabilities).toEqual({ Scope: 'global' });
  });
});
