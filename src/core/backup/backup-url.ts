import { posix } from 'node:path';
import { ErrorCodes, StowageError } from '../errors.js';
import { redactText } from '../logger.js';
import { BackupIdSchema, VolumeNameSchema } from './index.js';

/**
 * Backup URLs: where a repository is (a target: scheme and location), optionally a volume and a
 * backup in it. Every URL stowage reads or writes goes through parseBackupUrl/formatBackupUrl:
 *   vfs:///srv/backups                          a repository (a directory on any filesystem)
 *   vfs:///srv/backups?volume=pg                that volume's backups in it
 *   vfs:///srv/backups?volume=pg&backup=<id>    one backup
 *   s3://bucket@region/path                     a repository under a prefix of an S3 bucket
 *   s3://bucket@region/path?endpoint=http%3A%2F%2Fceph.lan%3A7480   an S3-compatible store
 * Targets are a registry of schemes: each is one entry here plus a BlobStore (see backup-targets/).
 */

/** Where a repository is kept; `scheme` picks the BlobStore (see backup-targets/open-target.ts). */
export interface VfsTarget {
  scheme: 'vfs';
  /** Absolute, normalised directory path. */
  path: string;
}
/** A prefix of an S3 bucket; credentials never appear here (they come from the AWS chain). */
export interface S3Target {
  scheme: 's3';
  bucket: string;
  region: string;
  /** Where the repository starts in the bucket: '' (the whole bucket) or `a/b` (no slashes at the ends). */
  prefix: string;
  /** An S3-compatible store's origin (`http(s)://host[:port]`); AWS when absent (or STOWAGE_S3_ENDPOINT). */
  endpoint?: string;
}
export type BackupTarget = VfsTarget | S3Target;

export interface BackupUrl {
  target: BackupTarget;
  volume?: string;
  backup?: string;
}

interface SchemeSyntax<T extends BackupTarget> {
  /** Query keys that belong to the target (not to the volume or backup it names). */
  targetKeys?: readonly string[];
  /** Parses what follows `scheme://` up to the query, with the target's own query values. */
  parse(rest: string, url: string, query: ReadonlyMap<string, string>): T;
  /** The target's URL, with its own query keys if any. */
  format(target: T): string;
}

function invalid(url: string, why: string): StowageError {
  // A refused URL may carry what must never be shown (keys typed into it, or into an endpoint
  // percent-encoded in its query): it is shown with those redacted, and decoded enough to see them.
  const readable = redactText(url.replace(/%3A/gi, ':').replace(/%2F/gi, '/').replace(/%40/gi, '@'));
  const shown = JSON.stringify(readable.length > 300 ? `${readable.slice(0, 300)}...` : readable);
  return new StowageError(ErrorCodes.INVALID_REQUEST, `backup URL ${shown} is not valid: ${why}`);
}

/** Percent-encodes what a path segment cannot carry literally in a URL; keeps the common characters readable. */
function encodeSegment(segment: string): string {
  return encodeURIComponent(segment).replace(/%40/g, '@').replace(/%2B/g, '+').replace(/%2C/g, ',').replace(/%3A/g, ':').replace(/%3D/g, '=');
}

const vfsSyntax: SchemeSyntax<VfsTarget> = {
  parse(rest, url) {
    // `vfs:///abs/path`: an empty authority, then the absolute path.
    if (!rest.startsWith('/')) {
      throw invalid(url, 'a vfs URL names a local path and has no host: write vfs:///absolute/path (three slashes)');
    }
    const segments = rest.split('/').slice(1);
    if (rest === '/') throw invalid(url, 'the repository cannot be the root directory');
    const decoded = segments.map((raw) => {
      if (raw === '') throw invalid(url, 'the path has an empty segment (a doubled or trailing "/")');
      let segment: string;
      try {
        segment = decodeURIComponent(raw);
      } catch {
        throw invalid(url, `the path segment ${JSON.stringify(raw)} has a broken %-escape`);
      }
      if (segment === '.' || segment === '..') throw invalid(url, 'the path must be normalised: no "." or ".." segments');
      if (segment.includes('/')) throw invalid(url, 'a path segment cannot hold an escaped "/" (%2F)');
      // eslint-disable-next-line no-control-regex
      if (/[\u0000-\u001f\u007f]/.test(segment)) throw invalid(url, 'the path holds a control character');
      return segment;
    });
    const path = `/${decoded.join('/')}`;
    if (posix.normalize(path) !== path) throw invalid(url, 'the path is not normalised');
    if (path.length > 4096) throw invalid(url, 'the path is longer than 4096 characters');
    return { scheme: 'vfs', path };
  },
  format(target) {
    return `vfs://${target.path.split('/').map(encodeSegment).join('/')}`;
  },
};

const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const REGION = /^[a-z0-9][a-z0-9-]{0,62}$/;
const PREFIX_SEGMENT = /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/;

/** An endpoint is an origin: http(s), a host, maybe a port; never credentials, a path or a query. */
export function parseS3Endpoint(value: string, url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(value);
  } catch {
    throw invalid(url, `endpoint ${JSON.stringify(redactText(value.slice(0, 200)))} is not a URL (write it like http://host:7480)`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw invalid(url, 'the endpoint must be an http:// or https:// URL');
  if (parsed.username !== '' || parsed.password !== '') {
    throw invalid(url, 'the endpoint must not carry credentials: they come from the AWS credentials chain (environment, shared files, profiles)');
  }
  if ((parsed.pathname !== '/' && parsed.pathname !== '') || parsed.search !== '' || parsed.hash !== '') {
    throw invalid(url, 'the endpoint is a scheme, host and port only (no path or query)');
  }
  return parsed.origin;
}

const s3Syntax: SchemeSyntax<S3Target> = {
  targetKeys: ['endpoint'],
  parse(rest, url, query) {
    // `s3://bucket@region/path`, Convoy's form: the authority is bucket@region.
    const slash = rest.indexOf('/');
    const authority = slash < 0 ? rest : rest.slice(0, slash);
    const path = slash < 0 ? '' : rest.slice(slash + 1);
    const at = authority.indexOf('@');
    if (at < 0) throw invalid(url, 'write an S3 target as s3://bucket@region/path (the region after "@", e.g. s3://backups@us-east-1/stowage)');
    const bucket = authority.slice(0, at);
    const region = authority.slice(at + 1);
    if (bucket.includes(':')) {
      throw invalid(url, 'credentials do not go in the URL (the part before "@" is the bucket): they come from the AWS credentials chain (environment, shared files, profiles)');
    }
    if (!BUCKET.test(bucket) || bucket.includes('..')) {
      throw invalid(url, `${JSON.stringify(bucket)} is not an S3 bucket name (3-63 characters: lowercase letters, digits, "." and "-")`);
    }
    if (!REGION.test(region)) throw invalid(url, `${JSON.stringify(region)} is not a region name (like us-east-1)`);
    const trimmed = path.endsWith('/') ? path.slice(0, -1) : path;
    const segments = trimmed === '' ? [] : trimmed.split('/');
    for (const segment of segments) {
      if (!PREFIX_SEGMENT.test(segment)) {
        throw invalid(url, `the path segment ${JSON.stringify(segment)} is not valid (letters, digits, ".", "_", "-"; not empty, not starting with ".")`);
      }
    }
    const prefix = segments.join('/');
    if (prefix.length > 512) throw invalid(url, 'the path is longer than 512 characters');
    const endpoint = query.get('endpoint');
    return { scheme: 's3', bucket, region, prefix, ...(endpoint !== undefined ? { endpoint: parseS3Endpoint(endpoint, url) } : {}) };
  },
  format(target) {
    const base = `s3://${target.bucket}@${target.region}${target.prefix === '' ? '' : `/${target.prefix}`}`;
    return target.endpoint === undefined ? base : `${base}?endpoint=${encodeURIComponent(target.endpoint)}`;
  },
};

/** The target schemes stowage knows. */
const SCHEMES: { [S in BackupTarget['scheme']]: SchemeSyntax<Extract<BackupTarget, { scheme: S }>> } = {
  vfs: vfsSyntax,
  s3: s3Syntax,
};

const QUERY_KEYS = ['volume', 'backup'] as const;

/**
 * Parses and validates a backup URL. Throws E_INVALID_REQUEST saying what is wrong: an unknown
 * scheme, a relative or unnormalised path, an unknown or repeated query key, a bad volume name
 * or backup id, a backup without its volume.
 */
export function parseBackupUrl(url: unknown): BackupUrl {
  if (typeof url !== 'string' || url.length === 0) throw invalid(String(url), 'a backup URL must be a non-empty string');
  if (url.length > 8192) throw invalid(url, 'longer than 8192 characters');
  const match = /^([a-z][a-z0-9+.-]*):\/\/(.*)$/s.exec(url);
  if (!match) throw invalid(url, `write it as scheme://location, e.g. vfs:///srv/backups (known schemes: ${Object.keys(SCHEMES).join(', ')})`);
  const [, scheme, afterScheme] = match as unknown as [string, string, string];
  if (!(scheme in SCHEMES)) throw invalid(url, `unknown scheme "${scheme}" (known: ${Object.keys(SCHEMES).join(', ')})`);
  if (afterScheme.includes('#')) throw invalid(url, 'a backup URL has no fragment ("#")');
  const cut = afterScheme.indexOf('?');
  const rest = cut < 0 ? afterScheme : afterScheme.slice(0, cut);
  const query = cut < 0 ? undefined : afterScheme.slice(cut + 1);
  const syntax = SCHEMES[scheme as BackupTarget['scheme']] as SchemeSyntax<BackupTarget>;
  const targetKeys = syntax.targetKeys ?? [];
  const targetQuery = new Map<string, string>();
  const named: { volume?: string; backup?: string } = {};
  if (query !== undefined) {
    if (query === '') throw invalid(url, 'an empty query ("?" with nothing after it)');
    const seen = new Set<string>();
    for (const pair of query.split('&')) {
      const eq = pair.indexOf('=');
      if (eq <= 0) throw invalid(url, `query part ${JSON.stringify(pair)} is not key=value`);
      const key = pair.slice(0, eq);
      let value: string;
      try {
        value = decodeURIComponent(pair.slice(eq + 1));
      } catch {
        throw invalid(url, `the value of ${key} has a broken %-escape`);
      }
      const known = [...QUERY_KEYS, ...targetKeys];
      if (!known.includes(key)) throw invalid(url, `unknown query key "${key}" (known: ${known.join(', ')})`);
      if (seen.has(key)) throw invalid(url, `query key "${key}" is given twice`);
      seen.add(key);
      if (targetKeys.includes(key)) {
        targetQuery.set(key, value);
      } else if (key === 'volume') {
        if (!VolumeNameSchema.safeParse(value).success) throw invalid(url, `${JSON.stringify(value)} is not a valid volume name`);
        named.volume = value;
      } else {
        if (!BackupIdSchema.safeParse(value).success) throw invalid(url, `${JSON.stringify(value)} is not a backup id (like 20261202T143500123Z-1a2b3c4d)`);
        named.backup = value;
      }
    }
  }
  const result: BackupUrl = { target: syntax.parse(rest, url, targetQuery) };
  if (named.volume !== undefined) result.volume = named.volume;
  if (named.backup !== undefined) result.backup = named.backup;
  if (result.backup !== undefined && result.volume === undefined) throw invalid(url, 'a backup id needs its volume (volume=NAME&backup=ID)');
  return result;
}

/** The URL of a target, a volume in it or a backup; parseBackupUrl(formatBackupUrl(u)) equals u. */
export function formatBackupUrl(url: BackupUrl): string {
  if (url.backup !== undefined && url.volume === undefined) throw new StowageError(ErrorCodes.INTERNAL, 'a backup URL with a backup id needs its volume');
  const base = (SCHEMES[url.target.scheme] as SchemeSyntax<BackupTarget>).format(url.target);
  const query = [
    ...(url.volume !== undefined ? [`volume=${encodeURIComponent(url.volume)}`] : []),
    ...(url.backup !== undefined ? [`backup=${encodeURIComponent(url.backup)}`] : []),
  ];
  const formatted = query.length > 0 ? `${base}${base.includes('?') ? '&' : '?'}${query.join('&')}` : base;
  // What we write must read back as the same thing.
  parseBackupUrl(formatted);
  return formatted;
}

/** A URL that must name a repository only (no volume or backup), or at most a volume. */
export function parseRepositoryUrl(url: unknown, what: string): BackupUrl {
  const parsed = parseBackupUrl(url);
  if (parsed.backup !== undefined) throw invalid(String(url), `${what} takes a repository (or a volume in one), not one backup: drop &backup=${parsed.backup}`);
  return parsed;
}

/** A URL that must name one backup. */
export function parseOneBackupUrl(url: unknown, expected = 'it must name one backup: add ?volume=NAME&backup=ID (see the backup list)'): BackupUrl & { volume: string; backup: string } {
  const parsed = parseBackupUrl(url);
  if (parsed.volume === undefined || parsed.backup === undefined) {
    throw invalid(String(url), expected);
  }
  return parsed as BackupUrl & { volume: string; backup: string };
}
