/** Pure reading of `/proc/self/mounts`: the one source of truth for what is mounted where. */

export interface MountEntry {
  source: string;
  target: string;
  fstype: string;
  options: string[];
}

/** The kernel escapes space, tab, newline and backslash in mount fields as octal (`\040`). */
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
