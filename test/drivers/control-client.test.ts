/**
 * The CLI's client of the control API (src/drivers/cli/client.ts) against real unix sockets:
 * the daemon's own server, a socket nobody serves, and a foreign server answering nonsense.
 * Each failure comes back as a ControlError whose `kind` says whose fault it was.
 */
import { createServer, type RequestListener, type Server } from 'node:http';
import { join } from 'node:path';
import { afterAll, describe, expect, expectTypeOf, it } from 'vitest';
import { ErrorCodes } from '../../src/core/errors.js';
import type { VolumeInfo } from '../../src/core/volume-manager.js';
import { ControlError, callDaemon } from '../../src/drivers/cli/client.js';
import { controlEndpoints as api } from '../../src/drivers/control/endpoints.js';
import { listedNames } from '../helpers/plugin-client.js';
import { pluginServerForSuite } from '../helpers/plugin-server.js';

async function rejectionOf(call: Promise<unknown>): Promise<ControlError> {
  const err = await call.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(ControlError);
  return err as ControlError;
}

describe('the control API client', () => {
  const srv = pluginServerForSuite('stowage-client-');
  const foreign: Server[] = [];

  afterAll(async () => {
    for (const server of foreign) await new Promise((resolve) => server.close(resolve));
  });

  /** A server on its own socket answering every request with `status` and `body`. */
  async function answering(name: string, status: number, body: string): Promise<string> {
    const socket = join(srv().dir, `${name}.sock`);
    const listener: RequestListener = (req, res) => {
      req.resume();
      req.on('end', () => res.writeHead(status, { 'content-type': 'application/json' }).end(body));
    };
    const server = createServer(listener);
    await new Promise<void>((resolve) => server.listen(socket, resolve));
    foreign.push(server);
    return socket;
  }

  it('returns the typed answer of an operation', async () => {
    const created = await callDaemon(srv().socket, api.create, { name: 'typed', options: { size: '1M' } });
    expect(created.created).toBe(true);
    const volume = await callDaemon(srv().socket, api.inspect, { name: 'typed' });
    expectTypeOf(volume).toEqualTypeOf<VolumeInfo>();
    expect(volume.status.size).toBe('1MiB');
    // @ts-expect-error inspect takes a "name", not a "volume": the endpoint's schema types the call.
    await expect(callDaemon(srv().socket, api.inspect, { volume: 'typed' })).rejects.toThrow('"name"');
  });

  it('reports a refusal with the daemon\'s error code and message', async () => {
    const err = await rejectionOf(callDaemon(srv().socket, api.inspect, { name: 'not-there' }));
    expect(err.kind).toBe('refused');
    expect(err.code).toBe(ErrorCodes.VOLUME_NOT_FOUND);
    expect(err.message).toContain('not-there');
  });

  it('reports a bad request as refused with E_INVALID_REQUEST, and the daemon changes nothing', async () => {
    const before = await listedNames(srv().socket);
    const err = await rejectionOf(callDaemon(srv().socket, api.remove, { name: 'typed', retain: 'yes' as unknown as boolean }));
    expect({ kind: err.kind, code: err.code }).toEqual({ kind: 'refused', code: ErrorCodes.INVALID_REQUEST });
    expect(err.message).toBe('the field "retain" must be true or false');
    expect(await listedNames(srv().socket)).toEqual(before);
  });

  it('reports a socket nobody serves as unreachable, naming it', async () => {
    const missing = join(srv().dir, 'nobody.sock');
    const err = await rejectionOf(callDaemon(missing, api.list, {}));
    expect(err.kind).toBe('unreachable');
    expect(err.code).toBeUndefined();
    expect(err.message).toContain(missing);
    expect(err.message).toMatch(/cannot reach the stowage daemon/);
  });

  it.each([
    ['text that is not JSON', 200, 'hello'],
    ['a JSON array', 200, '[1]'],
    ['an error status without an error body', 500, '{"oops":true}'],
  ])('reports %s as an unreadable answer', async (label, status, body) => {
    const socket = await answering(`garbage-${status}-${label.length}`, status, body);
    const err = await rejectionOf(callDaemon(socket, api.list, {}));
    expect(err.kind).toBe('unreadable');
    expect(err.code).toBeUndefined();
    expect(err.message).toBe(`the daemon at ${socket} sent an unreadable answer (HTTP ${status})`);
  });

  it('keeps the message of an error code it does not know, without claiming a code', async () => {
    const socket = await answering('newer', 409, JSON.stringify({ error: { code: 'E_FROM_THE_FUTURE', message: 'try later' } }));
    const err = await rejectionOf(callDaemon(socket, api.list, {}));
    expect({ kind: err.kind, code: err.code, message: err.message }).toEqual({ kind: 'refused', code: undefined, message: 'try later' });
  });
});
