/** Pure reading of `/proc/self/mounts`: the one source of truth for what is mounted where. */

export interface MountEntry {
  source: string;
  target: string;
  type: string;
  options: string;
}

/** The kernel escapes space, tab, newline and backslash in mount fields as octal (`\040`). */
function unescape(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

export function parseProcMounts(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    if (fields.length < 4) continue;
    entries.push({ source: unescape(fields[0]!), target: unescape(fields[1]!), type: fields[2]!, options: fields[3]! });
  }
  return entries;
}

/** What is visible at `target`: the last mount on it, since later mounts cover earlier ones. */
export function mountAt(entries: readonly MountEntry[], target: string): MountEntry | undefined {
  let found: MountEntry | undefined;
  for (const entry of entries) if (entry.target === target) found = entry;
  return found;
}
