import { invalidOption as invalid, optionMap, parseBoolOption, type OptionMap, type OptionParser, type ParsedOptions } from './schema/option-map.js';

/** Create-time options every backend understands. Parsed from Docker's free-form `Opts` map. */
export interface VolumeOptions {
  /** Size in bytes; recorded and shown, enforced where the backend can. */
  size?: number;
  /** Owner of the volume's root directory. */
  uid?: number;
  gid?: number;
  /** Permission bits of the volume's root directory (e.g. 0o755). */
  mode?: number;
  /** Take over existing data found where the new volume's data would go, instead of refusing. */
  adopt?: boolean;
  /** Backend-specific options, by the keys the backend declares in `capabilities.createOptions`. */
  backend?: Record<string, string>;
}

export const CREATE_OPTION_KEYS = ['size', 'uid', 'gid', 'mode', 'adopt'] as const;

/** Binary whatever the spelling, as Docker reads `10GB`; `Gi` as Kubernetes writes it. */
const UNITS: Record<string, number> = {
  '': 1, b: 1,
  k: 2 ** 10, kb: 2 ** 10, ki: 2 ** 10, kib: 2 ** 10,
  m: 2 ** 20, mb: 2 ** 20, mi: 2 ** 20, mib: 2 ** 20,
  g: 2 ** 30, gb: 2 ** 30, gi: 2 ** 30, gib: 2 ** 30,
  t: 2 ** 40, tb: 2 ** 40, ti: 2 ** 40, tib: 2 ** 40,
  p: 2 ** 50, pb: 2 ** 50, pi: 2 ** 50, pib: 2 ** 50,
};

/** Parses "512", "50M", "1.5G", "10GiB" (binary units, as Docker and Convoy use) into bytes. */
export function parseSize(value: string, key = 'size'): number {
  // Spaces and tabs only: `\s` would take Unicode spaces (no-break, line separators) unseen.
  const match = /^[ \t]*(\d+(?:\.\d+)?)[ \t]*([a-zA-Z]*)[ \t]*$/.exec(value);
  const unit = match ? UNITS[match[2]!.toLowerCase()] : undefined;
  if (!match || unit === undefined) {
    throw invalid(`option ${key}=${JSON.stringify(value)}: expected a size such as 512M, 10G or 1073741824`);
  }
  if (unit === 1 && !Number.isInteger(Number(match[1]))) {
    throw invalid(`option ${key}=${JSON.stringify(value)}: a size in bytes is a whole number (or give a unit: 1.5G)`);
  }
  const bytes = Math.floor(Number(match[1]) * unit);
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    throw invalid(`option ${key}=${JSON.stringify(value)}: the size must be greater than zero and below 8 PiB`);
  }
  return bytes;
}

export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1 && Number.isInteger(value / 1024)) {
    value /= 1024;
    unit += 1;
  }
  return `${value}${units[unit]}`;
}

/** 52428800 -> "50MiB", 1234567 -> "1.18MiB": rounded, for sizes shown to people in Status. */
export function formatBytesApprox(bytes: number, decimals = 2): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const shown = Number.isInteger(value) ? String(value) : value.toFixed(decimals).replace(/\.?0+$/, '');
  return `${shown}${units[unit]}`;
}

function parseId(value: string, key: string): number {
  if (!/^\d{1,10}$/.test(value) || Number(value) > 4294967294) {
    throw invalid(`option ${key}=${JSON.stringify(value)}: expected a numeric id between 0 and 4294967294`);
  }
  return Number(value);
}

function parseMode(value: string): number {
  const digits = value.replace(/^0o/i, '');
  if (!/^[0-7]{3,4}$/.test(digits)) {
    throw invalid(`option mode=${JSON.stringify(value)}: expected octal permission bits such as 755 or 0750`);
  }
  return parseInt(digits, 8);
}

const createOptionParsers = {
  size: (value: string) => parseSize(value),
  uid: parseId,
  gid: parseId,
  mode: parseMode,
  adopt: (value: string, key: string) => parseBoolOption(value, `option ${key}`),
} satisfies Record<(typeof CREATE_OPTION_KEYS)[number], OptionParser<unknown>>;

const keepText: OptionParser<string> = (value) => value;

/** Building a map compiles its schema: one per set of backend keys (a daemon has one backend). */
const volumeOptionMaps = new Map<string, OptionMap<Record<string, OptionParser<unknown>>>>();

function volumeOptionMap(backendKeys: readonly string[]): OptionMap<Record<string, OptionParser<unknown>>> {
  const cacheKey = backendKeys.join('\0');
  let map = volumeOptionMaps.get(cacheKey);
  if (!map) {
    const backendParsers: Record<string, OptionParser<string>> = Object.fromEntries(
      backendKeys.filter((key) => !Object.hasOwn(createOptionParsers, key)).map((key) => [key, keepText]));
    map = optionMap('volume', { ...createOptionParsers, ...backendParsers }, ['backup']);
    if (volumeOptionMaps.size < 64) volumeOptionMaps.set(cacheKey, map);
  }
  return map;
}

/**
 * Validates Docker's `Opts` (string values) or CLI `--opt` pairs. Unknown keys are an error, so a
 * typo never silently creates a volume without the limit or owner the user asked for.
 */
export function parseVolumeOptions(raw: unknown, backendKeys: readonly string[] = []): VolumeOptions {
  // The backend's keys are only known at run time; the declared core keys keep their types.
  const parsed = volumeOptionMap(backendKeys).parse(raw) as
    ParsedOptions<typeof createOptionParsers> & Record<string, string | undefined>;
  const { size, uid, gid, mode, adopt, ...backend } = parsed;
  const given = { size, uid, gid, mode, adopt, ...(Object.keys(backend).length > 0 ? { backend } : {}) };
  return Object.fromEntries(Object.entries(given).filter(([, value]) => value !== undefined)) as VolumeOptions;
}

/** Options that define a volume's identity; `adopt` only steers how it was created. */
export function sameDefiningOptions(a: VolumeOptions, b: VolumeOptions): boolean {
  const extras = (o: VolumeOptions) => JSON.stringify(Object.entries(o.backend ?? {}).sort());
  return a.size === b.size && a.uid === b.uid && a.gid === b.gid && a.mode === b.mode && extras(a) === extras(b);
}

/** Parses repeated `key=value` flags into a map; used for --opt on the CLI and daemon. */
export function parseKeyValuePairs(pairs: readonly string[], what: string): Record<string, string> {
  // Without a prototype, so that `__proto__=x` is a key like any other (and refused as unknown
  // where options are checked), not the prototype's setter that drops it unseen.
  const map = Object.create(null) as Record<string, string>;
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw invalid(`${what} ${JSON.stringify(pair)}: expected key=value`);
    const key = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1);
    // The last one winning would let a typo'd repeat pass unseen (size=1G then size=2G).
    if (Object.hasOwn(map, key) && map[key] !== value) {
      throw invalid(`${what} ${key} is given twice, as ${JSON.stringify(map[key])} and ${JSON.stringify(value)}: give it once`);
    }
    map[key] = value;
  }
  return map;
}
