/**
 * Pure parsers for `dmsetup status` output (kernel thin-pool target v1.22, thin target).
 * Formats: linux Documentation/admin-guide/device-mapper/thin-provisioning.rst; fixtures
 * captured from a real kernel are in test/fixtures/dm/.
 */
import { firstLine } from '../../core/errors.js';

/** The state of a thin-pool as `dmsetup status POOL` reports it. */
export type PoolStatus =
  | {
    failed: false;
    /** Sectors the pool target covers (its data size). */
    lengthSectors: number;
    transactionId: number;
    usedMetadataBlocks: number;
    totalMetadataBlocks: number;
    usedDataBlocks: number;
    totalDataBlocks: number;
    /** Root block of the reserved metadata snapshot, when one is held. */
    heldMetadataRoot?: number;
    /** `rw`; `ro` (metadata trouble or out of metadata space); `out_of_data_space`. */
    mode: 'rw' | 'ro' | 'out_of_data_space';
    discardPassdown: boolean;
    errorIfNoSpace: boolean;
    needsCheck: boolean;
    /** Free metadata blocks below which the kernel raises an event; absent on old kernels. */
    metadataLowWatermark?: number;
  }
  | { failed: true; lengthSectors: number };

export interface ThinStatus {
  failed: boolean;
  lengthSectors: number;
  /** Sectors mapped (provisioned) in the pool. */
  mappedSectors: number;
  /** Highest mapped sector, undefined when nothing is mapped. */
  highestMappedSector?: number;
}

export class DmParseError extends Error {
  constructor(what: string, text: string) {
    super(`unexpected ${what}: ${JSON.stringify(text.slice(0, 200))}`);
    this.name = 'DmParseError';
  }
}

function int(token: string | undefined, what: string, line: string): number {
  if (token === undefined || !/^\d+$/.test(token)) throw new DmParseError(what, line);
  return Number(token);
}

function ratio(token: string | undefined, what: string, line: string): [number, number] {
  const match = /^(\d+)\/(\d+)$/.exec(token ?? '');
  if (!match) throw new DmParseError(what, line);
  return [Number(match[1]), Number(match[2])];
}

/** Splits one status/table line into start, length, target and the target's arguments. */
export function splitTargetLine(line: string): { start: number; length: number; target: string; args: string[] } {
  const tokens = line.trim().split(/\s+/);
  if (tokens.length < 3) throw new DmParseError('device-mapper line', line);
  return {
    start: int(tokens[0], 'start sector', line),
    length: int(tokens[1], 'length', line),
    target: tokens[2]!,
    args: tokens.slice(3),
  };
}

/** Parses the status line of a thin-pool target (`dmsetup status POOL`). */
export function parsePoolStatus(text: string): PoolStatus {
  const line = statusLine(text);
  const { length, target, args } = splitTargetLine(line);
  if (target !== 'thin-pool') throw new DmParseError('target (expected thin-pool)', line);
  if (args[0] === 'Fail') return { failed: true, lengthSectors: length };
  const [usedMetadataBlocks, totalMetadataBlocks] = ratio(args[1], 'metadata usage', line);
  const [usedDataBlocks, totalDataBlocks] = ratio(args[2], 'data usage', line);
  const held = args[3];
  const mode = args[4];
  if (mode !== 'rw' && mode !== 'ro' && mode !== 'out_of_data_space') throw new DmParseError('pool mode', line);
  const rest = args.slice(5);
  return {
    failed: false,
    lengthSectors: length,
    transactionId: int(args[0], 'transaction id', line),
    usedMetadataBlocks,
    totalMetadataBlocks,
    usedDataBlocks,
    totalDataBlocks,
    ...(held !== undefined && held !== '-' ? { heldMetadataRoot: int(held, 'held metadata root', line) } : {}),
    mode,
    discardPassdown: rest.includes('discard_passdown'),
    errorIfNoSpace: rest.includes('error_if_no_space'),
    needsCheck: rest.includes('needs_check'),
    ...(rest[3] !== undefined && /^\d+$/.test(rest[3]) ? { metadataLowWatermark: Number(rest[3]) } : {}),
  };
}

/** Parses the status line of a thin target (`dmsetup status THIN`). */
export function parseThinStatus(text: string): ThinStatus {
  const line = statusLine(text);
  const { length, target, args } = splitTargetLine(line);
  if (target !== 'thin') throw new DmParseError('target (expected thin)', line);
  if (args[0] === 'Fail') return { failed: true, lengthSectors: length, mappedSectors: 0 };
  const highest = args[1];
  return {
    failed: false,
    lengthSectors: length,
    mappedSectors: int(args[0], 'mapped sectors', line),
    ...(highest !== undefined && highest !== '-' ? { highestMappedSector: int(highest, 'highest mapped sector', line) } : {}),
  };
}

/**
 * Splits the output of `dmsetup status` or `dmsetup table` without a device name, where every
 * line is prefixed with `NAME: `, into lines per device.
 */
export function splitByDevice(text: string): Map<string, string[]> {
  const devices = new Map<string, string[]>();
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    if (line === '' || line === 'No devices found') continue;
    const match = /^(\S+): (.*)$/.exec(line);
    if (!match) throw new DmParseError('device listing line', line);
    const lines = devices.get(match[1]!) ?? [];
    lines.push(match[2]!);
    devices.set(match[1]!, lines);
  }
  return devices;
}

/** The status line: dmsetup prints one per target, and stowage's devices have one target. */
function statusLine(text: string): string {
  const line = firstLine(text);
  if (line === '') throw new DmParseError('empty output', text);
  return line;
}
