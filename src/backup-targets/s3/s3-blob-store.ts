import { createHash } from 'node:crypto';
import { Readable, Transform } from 'node:stream';
import type { S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import {
  assertValidKey, assertValidPrefix, blobMissing, isValidKey, MAX_DELETE_BATCH, MAX_LIST_PAGE,
  type BlobStore, type ListedObject, type ListOptions, type ListPage,
} from '../../core/backup/blob-store.js';
import { parseS3Endpoint, type S3Target } from '../../core/backup/backup-url.js';
import { ErrorCodes, StowageError } from '../../core/errors.js';
import { importLazily } from '../../core/lazy-import.js';
import { Gate } from './gate.js';

/** The environment variable naming an S3-compatible endpoint for targets whose URL names none. */
export const S3_ENDPOINT_ENV = 'STOWAGE_S3_ENDPOINT';

export interface S3BlobStoreOptions {
  /** Requests in flight at once, whatever the callers do (default 8). */
  concurrency?: number;
  /** Attempts per request, with the SDK's exponential backoff between them (default 5). */
  maxAttempts?: number;
  /** Overrides the endpoint of the target and of STOWAGE_S3_ENDPOINT. */
  endpoint?: string;
  /** A ready client (tests); otherwise one is made from the target and the AWS credentials chain. */
  client?: S3Client;
  /** A request whose connection carries no byte this long fails (default 2 minutes). */
  idleTimeoutMs?: number;
  /** A request not answered whole within this fails, however it trickles (default 10 minutes). */
  requestTimeoutMs?: number;
  /**
   * Aborts every request in flight or to come (a cancelled job, a stopping daemon): they fail
   * with the signal's reason at once, not after a dead server's timeouts.
   */
  signal?: AbortSignal;
}

type Sdk = typeof import('@aws-sdk/client-s3');

const DEFAULT_REQUEST_TIMEOUT_MS = 600_000;
/** Answers the SDK parses itself (listings, errors: a 1000-key page is about 300 KB). */
const MAX_PARSED_BODY_BYTES = 16 * 1024 * 1024;

/**
 * Bounds every response body, on the raw response inside the SDK's deserializer:
 * - in time: a body not whole within `timeoutMs` of its headers fails. The SDK's request timeout
 *   ends with the headers, so a server trickling a byte at a time would hold a listing, a read,
 *   their job and its repository lock for ever;
 * - in size, for the bodies the SDK reads whole to parse (all but GetObject's, which read()
 *   bounds by what it asked for): a listing without end would otherwise grow this process, the
 *   plugin serving every volume, until the kernel kills it.
 */
const boundedBodies = (timeoutMs: number) => ((next: (args: unknown) => Promise<{ response: { body?: unknown } }>, context: { commandName?: string }) => async (args: unknown) => {
  const result = await next(args);
  const body = result.response.body;
  if (!(body instanceof Readable)) return result;
  const what = context.commandName ?? 'a request';
  const cap = what === 'GetObjectCommand' ? Infinity : MAX_PARSED_BODY_BYTES;
  let seen = 0;
  const bounded = body.pipe(new Transform({
    transform(chunk: Buffer, _encoding, done) {
      seen += chunk.length;
      if (seen > cap) {
        body.destroy();
        done(new Error(`the answer to ${what} is larger than ${cap} bytes: refused`));
        return;
      }
      done(null, chunk);
    },
  }));
  const timer = setTimeout(() => body.destroy(new Error(`the answer to ${what} was not whole within ${Math.round(timeoutMs / 1000)} s`)), timeoutMs);
  bounded.once('close', () => clearTimeout(timer));
  body.on('error', (err) => bounded.destroy(err));
  result.response.body = bounded;
  return result;
  // Typed loosely above: the SDK's middleware generics name every command's input and output.
}) as unknown as Parameters<S3Client['middlewareStack']['add']>[0];
/** The largest pack a repository's config allows, with its index and room to spare. */
const MAX_WHOLE_OBJECT_BYTES = 1024 * 1024 * 1024 + (256 << 20);

let sdkPromise: Promise<Sdk> | undefined;
/** The SDK is loaded on first use: stowage commands that never touch S3 do not pay for it. */
function loadSdk(): Promise<Sdk> {
  // The SDK warns on every process under Node 22 about its releases after January 2027; the
  // version stowage pins supports Node 20, so the warning would only be noise in CLI output.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  sdkPromise ??= importLazily(() => import('@aws-sdk/client-s3'), 'the S3 SDK').then(sdkExports);
  return sdkPromise;
}

/**
 * The SDK is CommonJS: Node's own import() of it gives its exports by name, but the CLI
 * bundle loads it from a chunk of its own, whose namespace holds them under `default` only.
 */
function sdkExports(loaded: Sdk): Sdk {
  const namespace = loaded as Sdk & { default?: Sdk };
  if (typeof namespace.S3Client === 'function') return namespace;
  if (typeof namespace.default?.S3Client === 'function') return namespace.default;
  throw new Error('@aws-sdk/client-s3 loaded without an S3Client export');
}

function statusOf(err: unknown): number | undefined {
  return (err as Partial<S3ServiceException> | undefined)?.$metadata?.httpStatusCode;
}

function nameOf(err: unknown): string {
  return (err as { name?: string } | undefined)?.name ?? 'Error';
}

/**
 * A BlobStore on an S3 bucket (AWS, or an S3-compatible store through an endpoint, addressed
 * path-style). Keys live under the target's prefix. Objects are written once with a conditional
 * PUT (`If-None-Match: *`: the store refuses to replace an existing object, atomically, on AWS
 * and on Ceph radosgw) and a Content-MD5 the store checks before it keeps anything, so a body
 * damaged on the way is refused, not stored. Reads check the length the store announced.
 * Credentials come only from the AWS chain (environment, shared config and credentials files,
 * profiles); they never appear in a URL or a message.
 */
export class S3BlobStore implements BlobStore {
  readonly location: string;
  private readonly root: string;
  private readonly gate: Gate;
  private clientPromise: Promise<S3Client> | undefined;

  constructor(private readonly target: S3Target, private readonly options: S3BlobStoreOptions = {}) {
    this.root = target.prefix === '' ? '' : `${target.prefix}/`;
    this.location = `s3://${target.bucket}@${target.region}${target.prefix === '' ? '' : `/${target.prefix}`}`;
    this.gate = new Gate(Math.max(1, options.concurrency ?? 8));
  }

  /** The endpoint requests go to, or undefined for AWS itself. */
  get endpoint(): string | undefined {
    const fromEnv = process.env[S3_ENDPOINT_ENV];
    // Held to the URL form's rules (an origin, no credentials, path or query): it is shown in errors.
    return this.options.endpoint ?? this.target.endpoint ?? (fromEnv !== undefined && fromEnv !== '' ? parseS3Endpoint(fromEnv, `$${S3_ENDPOINT_ENV}`) : undefined);
  }

  private client(): Promise<S3Client> {
    this.clientPromise ??= (async () => {
      if (this.options.client) return this.options.client;
      const sdk = await loadSdk();
      const endpoint = this.endpoint;
      const client = new sdk.S3Client({
        region: this.target.region,
        ...(endpoint !== undefined ? { endpoint, forcePathStyle: true } : {}),
        maxAttempts: this.options.maxAttempts ?? 5,
        retryMode: 'standard',
        // A store that stops answering fails the request (and, after the retries, the backup)
        // instead of holding it, its job and its repository lock forever: no connection in 10 s,
        // no byte for 2 minutes, or no whole answer in 10 minutes (a server trickling a byte at a
        // time; an 8 MiB pack at 14 KB/s). The SDK only warns on its request timeout unless told
        // to throw.
        requestHandler: {
          connectionTimeout: 10_000,
          socketTimeout: this.options.idleTimeoutMs ?? 120_000,
          requestTimeout: this.options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
          throwOnRequestTimeout: true,
        },
        // Stores that predate the SDK's 2025 default checksums refuse or mis-store their
        // headers; integrity is kept with Content-MD5 instead (see put).
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
      });
      client.middlewareStack.add(boundedBodies(this.options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS), { step: 'deserialize', priority: 'low', name: 'stowageBodyLimit' });
      return client;
    })();
    return this.clientPromise;
  }

  /** What each request is sent with: the store's abort signal. */
  private get sendOptions(): { abortSignal?: AbortSignal } {
    return this.options.signal ? { abortSignal: this.options.signal } : {};
  }

  private failed(op: string, key: string, err: unknown): StowageError {
    const signal = this.options.signal;
    if (signal?.aborted) {
      return signal.reason instanceof StowageError ? signal.reason
        : new StowageError(ErrorCodes.CANCELLED, `S3 ${op} of ${key === '' ? this.location : `${key} in ${this.location}`} was cancelled`);
    }
    if (err instanceof StowageError) return err;
    const status = statusOf(err);
    const message = err instanceof Error ? err.message : String(err);
    const code = status === undefined || status >= 500 || status === 429 ? ErrorCodes.BACKEND_UNAVAILABLE : ErrorCodes.BACKEND_COMMAND;
    const failure = new StowageError(code, `S3 ${op} of ${key === '' ? this.location : `${key} in ${this.location}`} failed: ${nameOf(err)}${
      status !== undefined ? ` (HTTP ${status})` : ''}: ${message.slice(0, 500)}${this.endpoint !== undefined ? ` [endpoint ${this.endpoint}]` : ''}`);
    if (status === 403 && (op === 'PutObject' || op === 'DeleteObjects')) this.refusals.add(failure);
    return failure;
  }

  /** Writes the credentials may not make: 403 on a put or delete, or a delete's keys all AccessDenied. */
  private readonly refusals = new WeakSet<object>();

  refusesWrites(err: unknown): boolean {
    return typeof err === 'object' && err !== null && this.refusals.has(err);
  }

  async put(key: string, data: Uint8Array): Promise<boolean> {
    assertValidKey(key);
    const sdk = await loadSdk();
    const client = await this.client();
    const md5 = createHash('md5').update(data).digest('base64');
    return this.gate.run(async () => {
      // 409 is AWS's answer to two conditional writes of one key at once: the other may fail.
      for (let attempt = 0; ; attempt += 1) {
        try {
          await client.send(new sdk.PutObjectCommand({
            Bucket: this.target.bucket, Key: this.root + key, Body: data, ContentLength: data.length, ContentMD5: md5, IfNoneMatch: '*',
          }), this.sendOptions);
          return true;
        } catch (err) {
          const status = statusOf(err);
          if (status === 412) return false;
          if (status === 409 && attempt < 3) {
            await new Promise((resolve) => setTimeout(resolve, 200 * (attempt + 1)));
            continue;
          }
          throw this.failed('PutObject', key, err);
        }
      }
    });
  }

  async get(key: string): Promise<Buffer> {
    assertValidKey(key);
    return this.read(key, undefined);
  }

  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    assertValidKey(key);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new StowageError(ErrorCodes.INVALID_REQUEST, `range ${offset}+${length} of ${key} is not valid`);
    }
    if (length === 0) {
      if ((await this.head(key)) === undefined) throw blobMissing(this.location, key);
      return Buffer.alloc(0);
    }
    return this.read(key, { offset, length });
  }

  private async read(key: string, range: { offset: number; length: number } | undefined): Promise<Buffer> {
    const sdk = await loadSdk();
    const client = await this.client();
    return this.gate.run(async () => {
      try {
        const out = await client.send(new sdk.GetObjectCommand({
          Bucket: this.target.bucket, Key: this.root + key,
          ...(range ? { Range: `bytes=${range.offset}-${range.offset + range.length - 1}` } : {}),
        }), this.sendOptions);
        // Bounded in size and time: a body that never ends, or trickles, is hostile or broken, and
        // this process is the plugin serving every volume.
        const limit = range ? range.length : MAX_WHOLE_OBJECT_BYTES;
        if (out.ContentLength !== undefined && out.ContentLength > limit) {
          (out.Body as { destroy?: () => void } | undefined)?.destroy?.();
          throw this.oversized(key, range, out.ContentLength);
        }
        const body = await this.readBody(out.Body as AsyncIterable<Uint8Array> & { destroy?: (err?: Error) => void }, limit,
          () => this.oversized(key, range));
        if (out.ContentLength !== undefined && body.length !== out.ContentLength) {
          throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE,
            `S3 GetObject of ${key} in ${this.location} returned ${body.length} bytes of the ${out.ContentLength} announced (connection cut?)`);
        }
        return body;
      } catch (err) {
        const status = statusOf(err);
        // A missing bucket is a wrong target, not a lost object.
        if ((status === 404 && nameOf(err) !== 'NoSuchBucket') || nameOf(err) === 'NoSuchKey') throw blobMissing(this.location, key);
        // Asked from past the end: no bytes, as the port says.
        if (status === 416 && range) return Buffer.alloc(0);
        throw this.failed('GetObject', key, err);
      }
    });
  }

  private oversized(key: string, range: { offset: number; length: number } | undefined, announced?: number): StowageError {
    return new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, `S3 GetObject of ${key} in ${this.location} ${announced !== undefined ? `announced ${announced} bytes` : 'sent more bytes'}` +
      (range ? ` for a range of ${range.length} (does the server ignore Range?)` : `, more than any object of a repository holds (${MAX_WHOLE_OBJECT_BYTES})`));
  }

  /** A response body, refused past `limit` bytes (its deadline is boundedBodies'). */
  private async readBody(body: AsyncIterable<Uint8Array> & { destroy?: (err?: Error) => void }, limit: number, tooLarge: () => StowageError): Promise<Buffer> {
    const parts: Buffer[] = [];
    let total = 0;
    // An abort while the body arrives ends it too (the request itself is already answered).
    const abort = () => body.destroy?.(new Error('aborted'));
    this.options.signal?.addEventListener('abort', abort, { once: true });
    try {
      for await (const part of body) {
        total += part.byteLength;
        if (total > limit) {
          body.destroy?.();
          throw tooLarge();
        }
        parts.push(Buffer.from(part.buffer, part.byteOffset, part.byteLength));
      }
    } finally {
      this.options.signal?.removeEventListener('abort', abort);
    }
    return Buffer.concat(parts, total);
  }

  async head(key: string): Promise<{ size: number } | undefined> {
    assertValidKey(key);
    const sdk = await loadSdk();
    const client = await this.client();
    return this.gate.run(async () => {
      try {
        const out = await client.send(new sdk.HeadObjectCommand({ Bucket: this.target.bucket, Key: this.root + key }), this.sendOptions);
        return { size: out.ContentLength ?? 0 };
      } catch (err) {
        if (statusOf(err) === 404) return undefined;
        throw this.failed('HeadObject', key, err);
      }
    });
  }

  async list(prefix: string, options: ListOptions = {}): Promise<ListPage> {
    assertValidPrefix(prefix);
    const sdk = await loadSdk();
    const client = await this.client();
    const pageSize = Math.min(Math.max(1, options.pageSize ?? MAX_LIST_PAGE), MAX_LIST_PAGE);
    return this.gate.run(async () => {
      try {
        const out = await client.send(new sdk.ListObjectsV2Command({
          Bucket: this.target.bucket, Prefix: this.root + prefix, MaxKeys: pageSize,
          ...(options.startAfter !== undefined && options.startAfter !== '' ? { StartAfter: this.root + options.startAfter } : {}),
        }), this.sendOptions);
        const objects: ListedObject[] = [];
        let last: string | undefined;
        for (const item of out.Contents ?? []) {
          // A key outside what was asked for is the server's error, not an object of this listing.
          if (item.Key === undefined || !item.Key.startsWith(this.root + prefix)) continue;
          const key = item.Key.slice(this.root.length);
          last = key;
          // Names outside the key alphabet (someone else's objects) are not objects of this store.
          if (isValidKey(key)) objects.push({ key, size: item.Size ?? 0 });
        }
        if (out.IsTruncated !== true) return { objects };
        // A listing that says more follows must say from where: one that does not would end here
        // quietly, and a garbage collection would take what it did not list for unreferenced.
        if (last === undefined) {
          throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, `S3 ListObjectsV2 of ${prefix} in ${this.location} says more objects follow but named none: the listing cannot go on`);
        }
        return { objects, next: last };
      } catch (err) {
        throw this.failed('ListObjectsV2', prefix, err);
      }
    });
  }

  async delete(keys: readonly string[]): Promise<void> {
    if (keys.length > MAX_DELETE_BATCH) {
      throw new StowageError(ErrorCodes.INVALID_REQUEST, `at most ${MAX_DELETE_BATCH} keys per delete, not ${keys.length}`);
    }
    keys.forEach(assertValidKey);
    if (keys.length === 0) return;
    const sdk = await loadSdk();
    const client = await this.client();
    await this.gate.run(async () => {
      let out;
      try {
        out = await client.send(new sdk.DeleteObjectsCommand({
          Bucket: this.target.bucket,
          Delete: { Quiet: true, Objects: keys.map((key) => ({ Key: this.root + key })) },
        }), this.sendOptions);
      } catch (err) {
        throw this.failed('DeleteObjects', keys[0]!, err);
      }
      const errors = (out.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey');
      if (errors.length > 0) {
        const shown = errors.slice(0, 5).map((e) => `${(e.Key ?? '?').slice(this.root.length)}: ${e.Code ?? '?'} ${e.Message ?? ''}`.trim());
        const failure = new StowageError(ErrorCodes.BACKEND_COMMAND,
          `S3 DeleteObjects in ${this.location} did not delete ${errors.length} of ${keys.length} objects: ${shown.join('; ')}${errors.length > 5 ? '; ...' : ''}`);
        if (errors.every((e) => e.Code === 'AccessDenied')) this.refusals.add(failure);
        throw failure;
      }
    });
  }

  /**
   * Checks the bucket answers before a backup starts: a missing bucket, a wrong region or
   * endpoint, or missing permissions fail here with a message, not half-way through.
   */
  async assertReachable(): Promise<void> {
    const sdk = await loadSdk();
    const client = await this.client();
    try {
      await client.send(new sdk.ListObjectsV2Command({ Bucket: this.target.bucket, Prefix: this.root, MaxKeys: 1 }), this.sendOptions);
    } catch (err) {
      const status = statusOf(err);
      const hint = status === 404 ? ' (does the bucket exist? stowage does not create buckets)'
        : status === 403 ? ' (the credentials from the AWS chain lack s3:ListBucket on it, or are wrong)'
        : status === 301 ? ' (the bucket is in another region)' : '';
      const failure = this.failed('ListObjectsV2', '', err);
      if (failure.code === ErrorCodes.CANCELLED) throw failure;
      throw new StowageError(failure.code, `cannot keep a backup repository at ${this.location}: ${failure.message}${hint}`);
    }
  }
}
