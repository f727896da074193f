/** Pure parsers for losetup and sysfs output (the mount table: src/core/proc-mounts.ts). */
import { z } from 'zod';
import { DmParseError } from './status-parser.js';

const losetupSchema = z.object({ loopdevices: z.array(z.unknown()) });
/** A device without a name is skipped; an unreadable backing file reads as none. */
const loopDeviceSchema = z.object({ name: z.string(), 'back-file': z.string().optional().catch(undefined) });

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
  const parsed = losetupSchema.safeParse(data);
  if (!parsed.success) throw new DmParseError('losetup JSON', text);
  return parsed.data.loopdevices.flatMap((item) => {
    const entry = loopDeviceSchema.safeParse(item);
    if (!entry.success) return [];
    const raw = entry.data['back-file'] ?? '';
    const deleted = raw.endsWith(' (deleted)');
    return [{ name: entry.data.name, backingFile: deleted ? raw.slice(0, -' (deleted)'.length) : raw, deleted }];
  });
}

/** `DEVNAME=dm-0` from /sys/dev/block/MAJ:MIN/uevent. */
export function parseUeventDevname(text: string): string | undefined {
  return /^DEVNAME=(.+)$/m.exec(text)?.[1]?.trim();
}
