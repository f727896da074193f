/**
 * Pure parser for `thin_dump` XML (thin-provisioning-tools 0.9), usually with `--skip-mappings`:
 * the pool's own record of which thin ids exist and the transaction id each was created under.
 * The metadata device is input the kernel wrote, but it may belong to another pool or machine:
 * anything that does not look exactly like thin_dump's output is an error, never a guess.
 */
import { DmParseError } from './status-parser.js';

export interface DumpedDevice {
  thinId: number;
  /** The pool's transaction id when the device was created (create_thin or create_snap). */
  transaction: number;
  mappedBlocks: number;
  creationTime: number;
  snapTime: number;
}

export interface ThinDump {
  transactionId: number;
  blockSectors: number;
  devices: Map<number, DumpedDevice>;
}

const TAG = /<(\/?)([a-z_]+)\b([^>]*?)(\/?)>/g;

function attributes(text: string): Record<string, string> {
  const attrs: Record<string, string> = {};
  for (const match of text.matchAll(/([a-z_]+)="([^"]*)"/g)) attrs[match[1]!] = match[2]!;
  return attrs;
}

function num(value: string | undefined, what: string, xml: string): number {
  if (value === undefined || !/^\d{1,16}$/.test(value)) throw new DmParseError(`thin_dump ${what}`, xml);
  const n = Number(value);
  if (!Number.isSafeInteger(n)) throw new DmParseError(`thin_dump ${what}`, xml);
  return n;
}

export function parseThinDump(xml: string): ThinDump {
  const superblock = /<superblock\b([^>]*)>/.exec(xml);
  if (!superblock || !/<\/superblock>\s*$/.test(xml)) throw new DmParseError('thin_dump output', xml);
  const sb = attributes(superblock[1]!);
  const devices = new Map<number, DumpedDevice>();
  for (const match of xml.matchAll(TAG)) {
    const [, closing, name, attrText] = match;
    if (name !== 'device' || closing === '/') continue;
    const a = attributes(attrText!);
    const device: DumpedDevice = {
      thinId: num(a.dev_id, 'dev_id', xml),
      transaction: num(a.transaction, 'device transaction', xml),
      mappedBlocks: num(a.mapped_blocks, 'mapped_blocks', xml),
      creationTime: num(a.creation_time, 'creation_time', xml),
      snapTime: num(a.snap_time, 'snap_time', xml),
    };
    if (devices.has(device.thinId)) throw new DmParseError(`thin_dump: device ${device.thinId} listed twice`, xml);
    devices.set(device.thinId, device);
  }
  return {
    transactionId: num(sb.transaction, 'transaction', xml),
    blockSectors: num(sb.data_block_size, 'data_block_size', xml),
    devices,
  };
}

/** The highest thin id in the pool, or -1 when it has none. */
export function highestThinId(dump: ThinDump): number {
  let max = -1;
  for (const id of dump.devices.keys()) if (id > max) max = id;
  return max;
}
