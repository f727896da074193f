/** Pure parsers for the mount table and losetup output. */
import { DmParseError } from './status-parser.js';

export interface MountEntry {
  source: string;
  target: string;
  fstype: string;
  options: string[];
}

export interface LoopDevice {
  /** `/dev/loopN` */
  name: string;
  /** The backing file; `deleted` when the file was unlinked while attached. */
  backingFile: string;
  deleted: boolean;
}

/** The kernel escapes space, tab, newline and backslash in /proc/mounts as octal (`\040`). */
function unescapeOctal(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Parses /proc/self/mounts (fstab format). */
export function parseProcMounts(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 4) continue;
    entries.push({
      source: unescapeOctal(fields[0]!),
      target: unescapeOctal(fields[1]!),
      fstype: fields[2]!,
      options: fields[3]!.split(','),
    });
  }
  return entries;
}

/** The mount whose target is `path` (the last one wins, as the kernel stacks mounts). */
export function mountAt(entries: readonly MountEntry[], path: string): MountEntry | undefined {
  let found: MountEntry | undefined;
  for (const entry of entries) if (entry.target === path) found = entry;
  return found;
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
