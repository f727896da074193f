/**
 * One error table for both protocols on the socket: the same failure gets the same status and
 * the same message from Docker's plugin calls (`{ Err }`) and from the control API
 * (`{ error: { code, message } }`), through the real server.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes, type ErrorCode } from '../../src/core/errors.js';
import { MAX_BODY_BYTES } from '../../src/drivers/http-body.js';
import { httpStatusOf } from '../../src/drivers/http-status.js';
import { controlCall, listedNames, pluginCall, socketRequest, type SocketResponse } from '../helpers/plugin-client.js';
import { pluginServerForSuite } from '../helpers/plugin-server.js';

let counter = 0;
const freshName = (prefix: string) => `${prefix}-${++counter}`;

/** A JSON body of exactly `bytes` bytes: the request padded with spaces. */
function paddedTo(bytes: number, request: object): string {
  const json = JSON.stringify(request);
  return json.slice(0, -1) + ' '.repeat(bytes - json.length) + '}';
}

describe('one error table for the plugin protocol and the control API', () => {
  const server = pluginServerForSuite('stowage-errors-');
  let socket: string;
  beforeAll(() => { socket = server().socket; });

  /** Both answers carry `code`'s status from the table, and the same message. */
  function expectSameFailure(plugin: SocketResponse, control: SocketResponse | { status: number; json: unknown }, code: ErrorCode): string {
    const err = (plugin.json as { Err?: unknown }).Err;
    const error = (control.json as { error?: { code: string; message: string } }).error;
    expect({ plugin: plugin.status, control: control.status }).toEqual({ plugin: httpStatusOf(code), control: httpStatusOf(code) });
    expect(error?.code).toBe(code);
    expect(typeof err).toBe('string');
    expect(error?.message).toBe(err);
    return err as string;
  }

  it('answers a bad volume name with 400 on both, and creates nothing', async () => {
    const before = await listedNames(socket);
    const plugin = await socketRequest(socket, '/VolumeDriver.Create', { Name: '../escape', Opts: {} });
    const control = await controlCall(socket, 'create', { name: '../escape' });
    expect(expectSameFailure(plugin, control, ErrorCodes.INVALID_NAME)).toMatch(/invalid volume name/);
    expect(plugin.status).toBe(400);
    expect(await listedNames(socket)).toEqual(before);
  });

  it('answers an unknown option with 400 on both, naming it', async () => {
    const name = freshName('badopt');
    const plugin = await socketRequest(socket, '/VolumeDriver.Create', { Name: name, Opts: { colour: 'red' } });
    const control = await controlCall(socket, 'create', { name, options: { colour: 'red' } });
    expect(expectSameFailure(plugin, control, ErrorCodes.INVALID_OPTION)).toContain('colour');
    expect(await listedNames(socket)).not.toContain(name);
  });

  it('answers an unknown volume with 404 on both', async () => {
    const name = freshName('missing');
    const plugin = await socketRequest(socket, '/VolumeDriver.Get', { Name: name });
    const control = await controlCall(socket, 'inspect', { name });
    expect(expectSameFailure(plugin, control, ErrorCodes.VOLUME_NOT_FOUND)).toContain(name);
    expect(plugin.status).toBe(404);
  });

  it('answers the removal of a mounted volume with 409 on both, and keeps it', async () => {
    const name = freshName('busy');
    expect((await pluginCall(socket, 'Create', { Name: name })).Err).toBeUndefined();
    expect((await pluginCall(socket, 'Mount', { Name: name, ID: 'm1' })).Err).toBeUndefined();
    const plugin = await socketRequest(socket, '/VolumeDriver.Remove', { Name: name });
    const control = await controlCall(socket, 'remove', { name });
    expect(expectSameFailure(plugin, control, ErrorCodes.VOLUME_IN_USE)).toContain('mounted');
    expect(plugin.status).toBe(409);
    expect(await listedNames(socket)).toContain(name);
    await pluginCall(socket, 'Unmount', { Name: name, ID: 'm1' });
  });

  it('answers a backup that is not there with 404, not as a fault of the server', async () => {
    const control = await controlCall(socket, 'backups/inspect', { url: 'vfs:///etc?volume=v&backup=20260101T000000000Z-00000000' });
    expect(control.status).toBe(404);
    expect((control.json as { error?: { code: string } }).error?.code).toBe(ErrorCodes.BACKUP_NOT_FOUND);
  });

  it('answers a body that is not a JSON object with 400 on both', async () => {
    const plugin = await socketRequest(socket, '/VolumeDriver.Create', '[1,2]');
    const control = await socketRequest(socket, '/stowage/v1/create', '[1,2]', { contentType: 'application/json' });
    expect(expectSameFailure(plugin, control, ErrorCodes.INVALID_REQUEST)).toBe('the request body must be a JSON object');
  });

  it('takes a body of exactly the limit on both and refuses one byte more with the same answer', async () => {
    const atLimit = freshName('at-limit');
    expect((await socketRequest(socket, '/VolumeDriver.Create', paddedTo(MAX_BODY_BYTES, { Name: atLimit }))).status).toBe(200);
    const viaControl = freshName('at-limit');
    const accepted = await socketRequest(socket, '/stowage/v1/create', paddedTo(MAX_BODY_BYTES, { name: viaControl }),
      { contentType: 'application/json' });
    expect(accepted.status).toBe(200);
    expect(await listedNames(socket)).toEqual(expect.arrayContaining([atLimit, viaControl]));

    const before = await listedNames(socket);
    const plugin = await socketRequest(socket, '/VolumeDriver.Create', paddedTo(MAX_BODY_BYTES + 1, { Name: freshName('over') }));
    const control = await socketRequest(socket, '/stowage/v1/create', paddedTo(MAX_BODY_BYTES + 1, { name: freshName('over') }),
      { contentType: 'application/json' });
    expect(expectSameFailure(plugin, control, ErrorCodes.INVALID_REQUEST)).toBe(`bad request: the body exceeds ${MAX_BODY_BYTES} bytes`);
    expect(await listedNames(socket)).toEqual(before);
  });

  it('serves a plugin call whatever query string follows its path', async () => {
    const name = freshName('query');
    expect(await socketRequest(socket, '/VolumeDriver.Create?trace=1', { Name: name })).toMatchObject({ status: 200, json: {} });
    expect(await socketRequest(socket, '/VolumeDriver.Get?', { Name: name })).toMatchObject({ status: 200, json: { Volume: { Name: name } } });
    expect(await listedNames(socket)).toContain(name);
    const unknown = await socketRequest(socket, '/VolumeDriver.Explode?x=1', { Name: 'x' });
    expect(unknown).toMatchObject({ status: 404, json: { Err: 'stowage does not implement POST /VolumeDriver.Explode' } });
  });

  it('answers a path nothing serves with 404 on both, each in its own shape', async () => {
    const plugin = await socketRequest(socket, '/VolumeDriver.Explode', { Name: 'x' });
    const control = await socketRequest(socket, '/stowage/v1/explode', {}, { contentType: 'application/json' });
    expect(plugin.status).toBe(404);
    expect(control.status).toBe(404);
    expect(plugin.json).toEqual({ Err: 'stowage does not implement POST /VolumeDriver.Explode' });
    expect(control.json).toEqual({ error: { code: ErrorCodes.INVALID_REQUEST, message: 'stowage does not implement POST /stowage/v1/explode' } });
  });
});
