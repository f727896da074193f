/**
 * An S3 endpoint that accepts a connection and then says nothing, or trickles its answer a byte
 * at a time: each request fails after the store's timeouts, never holds a job (and its
 * repository lock) for ever. Local servers, no S3 needed.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { S3BlobStore } from '../../src/backup-targets/s3/s3-blob-store.js';
import { parseBackupUrl, type S3Target } from '../../src/core/backup/backup-url.js';
import { ErrorCodes, StowageError } from '../../src/core/errors.js';

describe('an S3 endpoint that stops answering', () => {
  const servers: Server[] = [];
  const sockets = new Set<Socket>();
  const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
  let silent = '';
  let trickling = '';
  let endless = '';
  let requests = 0;

  const listen = async (onSocket: (socket: Socket) => void): Promise<string> => {
    const server = createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => {});
      socket.once('data', () => { requests += 1; });
      onSocket(socket);
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('no port');
    return `http://127.0.0.1:${address.port}`;
  };

  beforeAll(async () => {
    process.env.AWS_ACCESS_KEY_ID = 'AKIDEXAMPLE';
    process.env.AWS_SECRET_ACCESS_KEY = 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY';
    silent = await listen(() => {});
    trickling = await listen((socket) => {
      // Headers that promise a body, then one byte of it every 200 ms: the socket is never idle.
      socket.once('data', () => {
        socket.write('HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: 100000\r\n\r\n');
        const timer = setInterval(() => { if (!socket.destroyed) socket.write(' '); }, 200);
        socket.on('close', () => clearInterval(timer));
      });
    });
    endless = await listen((socket) => {
      // A body without a length that never ends, as fast as the socket takes it.
      socket.once('data', () => {
        socket.write('HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n');
        const block = Buffer.alloc(64 * 1024, 0x61);
        const pump = () => {
          while (!socket.destroyed && socket.write(`${block.length.toString(16)}\r\n${block.toString('latin1')}\r\n`)) { /* until the socket is full */ }
        };
        socket.on('drain', pump);
        pump();
      });
    });
  });
  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
    if (saved.id === undefined) delete process.env.AWS_ACCESS_KEY_ID; else process.env.AWS_ACCESS_KEY_ID = saved.id;
    if (saved.secret === undefined) delete process.env.AWS_SECRET_ACCESS_KEY; else process.env.AWS_SECRET_ACCESS_KEY = saved.secret;
  });

  const storeAt = (endpoint: string) =>
    new S3BlobStore(parseBackupUrl(`s3://bucket@us-east-1/repo?endpoint=${encodeURIComponent(endpoint)}`).target as S3Target,
      { maxAttempts: 2, idleTimeoutMs: 500, requestTimeoutMs: 2000 });

  it('fails a request that gets no answer at all, after its retries, naming the request', async () => {
    requests = 0;
    await expect(storeAt(silent).list('backups/')).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/^S3 ListObjectsV2 of backups\/ in s3:\/\/bucket@us-east-1\/repo failed/),
    });
    expect(requests).toBe(2);
  }, 30_000);

  it('ends a request to a silent server when its job is cancelled, with the cancellation, not after the timeouts', async () => {
    requests = 0;
    const cancel = new AbortController();
    // Timeouts far beyond the test's own: only the abort can end these requests in time.
    const store = new S3BlobStore(parseBackupUrl(`s3://bucket@us-east-1/repo?endpoint=${encodeURIComponent(silent)}`).target as S3Target,
      { maxAttempts: 5, idleTimeoutMs: 600_000, requestTimeoutMs: 600_000, signal: cancel.signal });
    const listing = store.list('backups/');
    const reading = store.get('config');
    while (requests < 2) await new Promise((resolve) => setTimeout(resolve, 20));
    cancel.abort(new StowageError(ErrorCodes.CANCELLED, 'job 0123 was cancelled'));
    await expect(listing).rejects.toMatchObject({ code: ErrorCodes.CANCELLED, message: 'job 0123 was cancelled' });
    await expect(reading).rejects.toMatchObject({ code: ErrorCodes.CANCELLED });
    // Nothing is tried again after the abort, and a new request fails at once.
    await expect(store.head('config')).rejects.toMatchObject({ code: ErrorCodes.CANCELLED });
    expect(requests).toBe(2);
  }, 20_000);

  it('refuses a body larger than what was asked for, or without end, instead of holding it in memory', async () => {
    const before = process.memoryUsage().rss;
    await expect(storeAt(endless).getRange('packs/ab/x', 0, 4096)).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringContaining('sent more bytes for a range of 4096 (does the server ignore Range?)'),
    });
    // A listing is parsed by the SDK: its body is capped before it reaches the parser.
    await expect(storeAt(endless).list('backups/')).rejects.toMatchObject({ code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringContaining('larger than') });
    expect(process.memoryUsage().rss - before).toBeLessThan(192 * 1024 * 1024);
  }, 60_000);

  it('holds STOWAGE_S3_ENDPOINT to the URL form\'s rules, and never shows credentials put there', async () => {
    const saved = process.env.STOWAGE_S3_ENDPOINT;
    try {
      for (const endpoint of ['http://envuser:EnvSecret99@127.0.0.1:1', `${silent}/some/path`]) {
        process.env.STOWAGE_S3_ENDPOINT = endpoint;
        const store = new S3BlobStore(parseBackupUrl('s3://bucket@us-east-1/repo').target as S3Target, { maxAttempts: 1 });
        const refused = await store.list('backups/').then(() => new Error('listed'), (err: unknown) => err as Error);
        expect(refused).toMatchObject({ code: ErrorCodes.INVALID_REQUEST, message: expect.stringMatching(/must not carry credentials|no path or query/) });
        expect(refused.message).not.toContain('EnvSecret99');
      }
    } finally {
      if (saved === undefined) delete process.env.STOWAGE_S3_ENDPOINT; else process.env.STOWAGE_S3_ENDPOINT = saved;
    }
  });

  it('fails a request whose answer trickles in without end', async () => {
    await expect(storeAt(trickling).get('config')).rejects.toMatchObject({ code: ErrorCodes.BACKEND_UNAVAILABLE });
    // A listing too: the SDK reads that body itself, past its own request timeout.
    await expect(storeAt(trickling).list('backups/')).rejects.toMatchObject({ code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringContaining('was not whole within 2 s') });
  }, 30_000);
});
