/**
 * The control API (/stowage/v1) the CLI uses, over the real unix socket: each operation of
 * src/drivers/control/endpoints.ts is served, checks its request against its schema and answers
 * failures as `{ error: { code, message } }` with the status of the shared table.
 */
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../src/core/errors.js';
import { CONTROL_PREFIX, controlEndpoints } from '../../src/drivers/control/endpoints.js';
import { controlCall, listedNames, pluginCall, socketRequest } from '../helpers/plugin-client.js';
import { pluginServerForSuite } from '../helpers/plugin-server.js';

let counter = 0;
const freshName = (prefix: string) => `${prefix}-${++counter}`;

describe('control API (/stowage/v1)', () => {
  const server = pluginServerForSuite('stowage-control-');
  let socket: string;
  beforeAll(() => { socket = server().socket; });

  it('creates, lists, inspects and removes a volume', async () => {
    const name = freshName('ctl');
    const created = await controlCall(socket, 'create', { name, options: { size: '5M' } });
    expect(created.status).toBe(200);
    expect(created.json.created).toBe(true);
    expect((created.json.volume as { name: string }).name).toBe(name);

    const listed = await controlCall(socket, 'list');
    expect(listed.status).toBe(200);
    expect((listed.json.volumes as Array<{ name: string }>).map((v) => v.name)).toContain(name);

    const inspected = await controlCall(socket, 'inspect', { name });
    expect(inspected.status).toBe(200);
    expect(inspected.json.name).toBe(name);
    expect((inspected.json.status as Record<string, string>).size).toBe('5MiB');

    const removed = await controlCall(socket, 'remove', { name });
    expect(removed.status).toBe(200);
    expect((await controlCall(socket, 'inspect', { name })).status).toBe(404);
    expect(await listedNames(socket)).not.toContain(name);
  });

  it('is idempotent for identical options and answers 409 for different ones', async () => {
    const name = freshName('idem');
    expect((await controlCall(socket, 'create', { name, options: { size: '2M', mode: '0700' } })).json.created).toBe(true);
    const again = await controlCall(socket, 'create', { name, options: { size: '2M', mode: '700' } });
    expect(again.status).toBe(200);
    expect(again.json.created).toBe(false);
    const conflict = await controlCall(socket, 'create', { name, options: { size: '4M' } });
    expect(conflict.status).toBe(409);
    const error = conflict.json.error as { code: string; message: string };
    expect(error.message).toContain(name);
    expect(error.code).toMatch(/^E_[A-Z_]+$/);
    // The conflicting create changed nothing.
    expect(((await controlCall(socket, 'inspect', { name })).json.status as Record<string, string>).size).toBe('2MiB');
  });

  it('answers 400 for an invalid name and creates nothing', async () => {
    const before = await listedNames(socket);
    const res = await controlCall(socket, 'create', { name: '../etc', options: {} });
    expect(res.status).toBe(400);
    expect((res.json.error as { message: string }).message).toMatch(/\S/);
    expect(await listedNames(socket)).toEqual(before);
  });

  it('answers 400 for an unknown option', async () => {
    const res = await controlCall(socket, 'create', { name: freshName('ctlopt'), options: { flavour: 'x' } });
    expect(res.status).toBe(400);
    expect((res.json.error as { message: string }).message).toContain('flavour');
  });

  it('answers 404 for inspect and remove of an unknown volume', async () => {
    const name = freshName('ctlnone');
    const inspected = await controlCall(socket, 'inspect', { name });
    expect(inspected.status).toBe(404);
    expect((inspected.json.error as { message: string }).message).toContain(name);
    expect((await controlCall(socket, 'remove', { name })).status).toBe(404);
  });

  it('answers 409 when removing a mounted volume', async () => {
    const name = freshName('ctlbusy');
    await controlCall(socket, 'create', { name });
    expect((await pluginCall(socket, 'Mount', { Name: name, ID: 'ctl-1' })).Err).toBeUndefined();
    const res = await controlCall(socket, 'remove', { name });
    expect(res.status).toBe(409);
    expect((res.json.error as { message: string }).message).toContain('mounted');
    expect(await listedNames(socket)).toContain(name);
    await pluginCall(socket, 'Unmount', { Name: name, ID: 'ctl-1' });
    expect((await controlCall(socket, 'remove', { name })).status).toBe(200);
  });

  it('requires retain to be a boolean and keeps the data when it is true', async () => {
    const name = freshName('keep');
    await controlCall(socket, 'create', { name });
    const { Mountpoint } = await pluginCall(socket, 'Mount', { Name: name, ID: 'k1' });
    await writeFile(join(Mountpoint as string, 'data.txt'), 'kept');
    await pluginCall(socket, 'Unmount', { Name: name, ID: 'k1' });

    const wrongType = await controlCall(socket, 'remove', { name, retain: 'yes' });
    expect(wrongType.status).toBe(400);
    expect((wrongType.json.error as { message: string }).message).toContain('retain');
    expect(await listedNames(socket)).toContain(name);

    const kept = await controlCall(socket, 'remove', { name, retain: true });
    expect(kept.status).toBe(200);
    const retainedAt = kept.json.retainedAt as string;
    expect(typeof retainedAt).toBe('string');
    expect(await readdir(retainedAt)).toEqual(['data.txt']);
    expect(await listedNames(socket)).not.toContain(name);
  });

  it('reports node, backend and scope in info', async () => {
    const res = await controlCall(socket, 'info');
    expect(res.status).toBe(200);
    expect(res.json.node).toBe('node-a');
    expect(res.json.backend).toBe('vfs');
    expect(res.json.scope).toBe('local');
  });

  it('answers 400 for a body that is not a JSON object', async () => {
    const res = await socketRequest(socket, '/stowage/v1/create', '[1,2]', { contentType: 'application/json' });
    expect(res.status).toBe(400);
  });

  describe('request schemas', () => {
    it.each([
      ['create', { name: 42 }, 'the request needs a non-empty string field "name"'],
      ['create', { options: { size: '1M' } }, 'the request needs a non-empty string field "name"'],
      ['remove', { name: 'x', force: 'yes' }, 'the field "force" must be true or false'],
      ['snapshots/create', { name: 'snap' }, 'the request needs a non-empty string field "volume"'],
      ['snapshots/delete', { volume: 'v', name: '' }, 'the request needs a non-empty string field "name"'],
      ['mounts/release', { name: 'v', id: '' }, 'the request needs a non-empty string field "id"'],
      ['nodes/forget', { node: ['a'] }, 'the request needs a non-empty string field "node"'],
    ])('%s with %j answers 400 naming the field', async (operation, body, message) => {
      const before = await listedNames(socket);
      const res = await controlCall(socket, operation, body);
      expect(res.status).toBe(400);
      expect(res.json.error).toEqual({ code: ErrorCodes.INVALID_REQUEST, message });
      expect(await listedNames(socket)).toEqual(before);
    });

    it('serves every declared operation, and nothing answers outside them', async () => {
      for (const endpoint of Object.values(controlEndpoints)) {
        // An empty request passes the schemas without required fields and fails the others;
        // either way the operation was reached, which a 404 would deny.
        const res = await controlCall(socket, endpoint.path.slice(1), {});
        expect(res.status, endpoint.path).not.toBe(404);
        if (res.status !== 200) expect((res.json.error as { code: string }).code, endpoint.path).toBe(ErrorCodes.INVALID_REQUEST);
      }
      const unknown = await socketRequest(socket, `${CONTROL_PREFIX}/volumes/explode`, {}, { contentType: 'application/json' });
      expect(unknown.status).toBe(404);
      expect(unknown.json).toEqual({
        error: { code: ErrorCodes.INVALID_REQUEST, message: `stowage does not implement POST ${CONTROL_PREFIX}/volumes/explode` },
      });
    });

    it('ignores fields an operation does not know, as before', async () => {
      const name = freshName('extra');
      const res = await controlCall(socket, 'create', { name, colour: 'blue' });
      expect(res.status).toBe(200);
      expect(await listedNames(socket)).toContain(name);
    });
  });
});
