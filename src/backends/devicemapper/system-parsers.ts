/** Pure parsers for losetup and sysfs output (the mount table: src/core/proc-mounts.ts). */
import { DmParseError } from './status-parser.js';

export interface LoopDevice {
  /** `/dev/loopN` */
  name: string;
  /** The backing file; `deleted` when the file was unlinked while attached. */
  backingFile: string;
  deleted: boolean;
}

/** Parses `losetup --list --json --output NAME,BACK-FILE` (empty output means no loop devices). */
export function parseLosetupJson(text: string): LoopDevice[] {
  if (text.trim() === '') return [];
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new DmParseError('losetup JSON', text);
  }
  const list = (data as { loopdevices?: unknown }).loopdevices;
  if (!Array.isArray(list)) throw new DmParseError('losetup JSON', text);
  return list.flatMap((item: unknown) => {
    const entry = item as { name?: unknown; 'back-file'?: unknown };
    if (typeof entry.name !== 'string') return [];
    const raw = typeof entry['back-file'] === 'string' ? entry['back-file'] : '';
    const deleted = raw.endsWith(' (deleted)');
    return [{ name: entry.name, backingFile: deleted ? raw.slice(0, -' (deleted)'.length) : raw, deleted }];
  });
}

/** `DEVNAME=dm-0` from /sys/dev/block/MAJ:MIN/uevent. */
export function parseUeventDevname(text: string): string | undefined {
  return /^DEVNAME=(.+)$/m.exec(text)?.[1]?.trim();
}
