/** Pure parsers for `dmsetup table` and `dmsetup ls` output. */
import { DmParseError, splitTargetLine } from './status-parser.js';

export interface TableLine {
  start: number;
  length: number;
  target: string;
  args: string[];
}

export interface PoolTable {
  lengthSectors: number;
  /** `MAJOR:MINOR` (the kernel always reports devices this way). */
  metadataDevice: string;
  dataDevice: string;
  blockSectors: number;
  lowWaterBlocks: number;
  /** Feature arguments such as `error_if_no_space` or `skip_block_zeroing`. */
  features: string[];
}

export interface ThinTable {
  lengthSectors: number;
  poolDevice: string;
  thinId: number;
  externalOrigin?: string;
}

export interface DmDeviceEntry {
  name: string;
  major: number;
  minor: number;
}

export function parseTable(text: string): TableLine[] {
  return text.split('\n').filter((l) => l.trim() !== '').map(splitTargetLine);
}

function only(text: string, target: string): TableLine {
  const lines = parseTable(text);
  if (lines.length !== 1 || lines[0]!.target !== target) {
    throw new DmParseError(`table (expected one ${target} line)`, text);
  }
  return lines[0]!;
}

function num(token: string | undefined, what: string, text: string): number {
  if (token === undefined || !/^\d+$/.test(token)) throw new DmParseError(what, text);
  return Number(token);
}

/** `0 LEN thin-pool META DATA BLOCK LOWWATER [N feature...]` */
export function parsePoolTable(text: string): PoolTable {
  const { length, args } = only(text, 'thin-pool');
  const featureCount = args[4] === undefined ? 0 : num(args[4], 'feature count', text);
  return {
    lengthSectors: length,
    metadataDevice: args[0] ?? '',
    dataDevice: args[1] ?? '',
    blockSectors: num(args[2], 'block size', text),
    lowWaterBlocks: num(args[3], 'low water mark', text),
    features: args.slice(5, 5 + featureCount),
  };
}

/** `0 LEN thin POOL ID [EXTERNAL_ORIGIN]` */
export function parseThinTable(text: string): ThinTable {
  const { length, args } = only(text, 'thin');
  return {
    lengthSectors: length,
    poolDevice: args[0] ?? '',
    thinId: num(args[1], 'thin id', text),
    ...(args[2] !== undefined ? { externalOrigin: args[2] } : {}),
  };
}

/** `dmsetup ls`: `NAME<TAB>(MAJOR:MINOR)` per line, or `No devices found`. */
export function parseLs(text: string): DmDeviceEntry[] {
  const entries: DmDeviceEntry[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line === 'No devices found') continue;
    const match = /^(\S+)\s+\((\d+)(?::\s*|,\s*)(\d+)\)$/.exec(line);
    if (!match) throw new DmParseError('dmsetup ls line', line);
    entries.push({ name: match[1]!, major: Number(match[2]), minor: Number(match[3]) });
  }
  return entries;
}
