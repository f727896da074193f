/**
 * Pure parser for `thin_delta` XML (thin-provisioning-tools 0.9), in its compact form
 * (`<different begin=".." length=".."/>`) and its `--verbose` form (`<different><range .../></different>`).
 */
import { DmParseError } from './status-parser.js';

export type DeltaKind = 'same' | 'different' | 'left_only' | 'right_only';

export interface DeltaRange {
  kind: DeltaKind;
  /** First block (in pool blocks of `blockSectors` sectors). */
  beginBlock: number;
  lengthBlocks: number;
}

export interface ThinDelta {
  /** Pool block size in 512-byte sectors. */
  blockSectors: number;
  transactionId: number;
  left: number;
  right: number;
  ranges: DeltaRange[];
}

/** A byte range of the device that differs between the two thin devices. */
export interface ChangedRange {
  offsetBytes: number;
  lengthBytes: number;
}

const KINDS: readonly DeltaKind[] = ['same', 'different', 'left_only', 'right_only'];

function attributes(tag: string): Record<string, string> {
  const attrs: Record<string, string> = {};
  for (const match of tag.matchAll(/([a-z_]+)="([^"]*)"/g)) attrs[match[1]!] = match[2]!;
  return attrs;
}

function num(value: string | undefined, what: string, xml: string): number {
  if (value === undefined || !/^\d+$/.test(value)) throw new DmParseError(`thin_delta ${what}`, xml);
  return Number(value);
}

export function parseThinDelta(xml: string): ThinDelta {
  const superblock = /<superblock\b([^>]*)>/.exec(xml);
  const diff = /<diff\b([^>]*)>/.exec(xml);
  if (!superblock || !diff || !/<\/diff>/.test(xml)) throw new DmParseError('thin_delta output', xml);
  const sb = attributes(superblock[1]!);
  const lr = attributes(diff[1]!);
  const ranges: DeltaRange[] = [];
  let current: DeltaKind | undefined;
  // Walk the tags in order: a bare `<kind begin length/>` is a range; `<kind>` opens a group of `<range/>`.
  for (const match of xml.matchAll(/<(\/?)([a-z_]+)\b([^>]*?)(\/?)>/g)) {
    const [, closing, name, attrText, selfClosing] = match;
    const kind = KINDS.find((k) => k === name);
    if (kind && closing === '' && selfClosing === '/') {
      const a = attributes(attrText!);
      ranges.push({ kind, beginBlock: num(a.begin, 'begin', xml), lengthBlocks: num(a.length, 'length', xml) });
    } else if (kind) {
      current = closing === '/' ? undefined : kind;
    } else if (name === 'range' && closing === '') {
      if (!current) throw new DmParseError('thin_delta range outside a group', xml);
      const a = attributes(attrText!);
      ranges.push({ kind: current, beginBlock: num(a.begin, 'begin', xml), lengthBlocks: num(a.length, 'length', xml) });
    }
  }
  return {
    blockSectors: num(sb.data_block_size, 'data_block_size', xml),
    transactionId: num(sb.transaction, 'transaction', xml),
    left: num(lr.left, 'left', xml),
    right: num(lr.right, 'right', xml),
    ranges,
  };
}

/**
 * The byte ranges that differ between the two devices (anything but `same`), sorted and with
 * adjacent ranges merged: what an incremental backup must copy from the right-hand device.
 */
export function changedRanges(delta: ThinDelta): ChangedRange[] {
  const blockBytes = delta.blockSectors * 512;
  const sorted = delta.ranges.filter((r) => r.kind !== 'same').sort((a, b) => a.beginBlock - b.beginBlock);
  const merged: ChangedRange[] = [];
  for (const range of sorted) {
    const offsetBytes = range.beginBlock * blockBytes;
    const lengthBytes = range.lengthBlocks * blockBytes;
    const last = merged[merged.length - 1];
    if (last && last.offsetBytes + last.lengthBytes >= offsetBytes) {
      last.lengthBytes = Math.max(last.lengthBytes, offsetBytes + lengthBytes - last.offsetBytes);
    } else {
      merged.push({ offsetBytes, lengthBytes });
    }
  }
  return merged;
}
