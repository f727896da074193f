/**
 * Pure parser for the mappings of one device in `thin_dump` XML (`--dev-id N`, without
 * `--skip-mappings`): which of the device's blocks the pool has mapped, as byte ranges.
 */
import { DmParseError } from './status-parser.js';
import type { ChangedRange } from './thin-delta-parser.js';

function attributes(text: string): Record<string, string> {
  const attrs: Record<string, string> = {};
  for (const match of text.matchAll(/([a-z_]+)="([^"]*)"/g)) attrs[match[1]!] = match[2]!;
  return attrs;
}

function num(value: string | undefined, what: string, xml: string): number {
  if (value === undefined || !/^\d{1,16}$/.test(value)) throw new DmParseError(`thin_dump ${what}`, xml);
  return Number(value);
}

/** The mapped byte ranges of device `thinId`, sorted and merged; throws if the dump does not list it. */
export function parseMappedRanges(xml: string, thinId: number): { blockSectors: number; ranges: ChangedRange[] } {
  const superblock = /<superblock\b([^>]*)>/.exec(xml);
  if (!superblock || !/<\/superblock>\s*$/.test(xml)) throw new DmParseError('thin_dump output', xml);
  const blockSectors = num(attributes(superblock[1]!).data_block_size, 'data_block_size', xml);
  const blockBytes = blockSectors * 512;
  const blocks: Array<[number, number]> = [];
  let inDevice = false;
  let found = false;
  for (const match of xml.matchAll(/<(\/?)([a-z_]+)\b([^>]*?)(\/?)>/g)) {
    const [, closing, name, attrText] = match;
    if (name === 'device') {
      if (closing === '/') { inDevice = false; continue; }
      inDevice = num(attributes(attrText!).dev_id, 'dev_id', xml) === thinId;
      found ||= inDevice;
      continue;
    }
    if (!inDevice) continue;
    const a = attributes(attrText!);
    if (name === 'single_mapping') blocks.push([num(a.origin_block, 'origin_block', xml), 1]);
    else if (name === 'range_mapping') blocks.push([num(a.origin_begin, 'origin_begin', xml), num(a.length, 'length', xml)]);
  }
  if (!found) throw new DmParseError(`thin_dump: device ${thinId} is not in the dump`, xml);
  blocks.sort((x, y) => x[0] - y[0]);
  const ranges: ChangedRange[] = [];
  for (const [begin, length] of blocks) {
    const last = ranges.at(-1);
    const offsetBytes = begin * blockBytes;
    if (last && last.offsetBytes + last.lengthBytes >= offsetBytes) {
      last.lengthBytes = Math.max(last.lengthBytes, offsetBytes + length * blockBytes - last.offsetBytes);
    } else {
      ranges.push({ offsetBytes, lengthBytes: length * blockBytes });
    }
  }
  return { blockSectors, ranges };
}
