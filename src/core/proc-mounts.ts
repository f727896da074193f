/** Pure reading of `/proc/self/mounts` and `/proc/self/mountinfo`: the one source of truth for what is mounted where. */

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

/** One line of /proc/self/mountinfo, the fields stowage needs. */
export interface MountinfoEntry {
  /** The filesystem's device, as `major:minor`. */
  dev: string;
  /** Where in its filesystem the mount starts (not `/` for a bind mount of a directory). */
  root: string;
  mountPoint: string;
  fstype: string;
  source: string;
}

/** Parses /proc/self/mountinfo (`id parent maj:min root mountpoint opts [optional...] - fstype source superopts`). */
export function parseMountinfo(text: string): MountinfoEntry[] {
  const entries: MountinfoEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.trim().split(' ');
    const dash = fields.indexOf('-', 6);
    if (fields.length < 7 || dash < 0 || fields.length < dash + 3) continue;
    entries.push({
      dev: fields[2]!, root: unescapeOctal(fields[3]!), mountPoint: unescapeOctal(fields[4]!), fstype: fields[dash + 1]!, source: unescapeOctal(fields[dash + 2]!),
    });
  }
  return entries;
}

/** Whether `path` is `dir` or under it (absolute paths). */
export function isPathWithin(path: string, dir: string): boolean {
  if (dir === '/') return path.startsWith('/');
  return path === dir || path.startsWith(dir + '/');
}

/** The mount `path` lives on: the longest matching mount point, the last of equals (stacked mounts). */
export function mountOf(entries: readonly MountinfoEntry[], path: string): MountinfoEntry | undefined {
  let found: MountinfoEntry | undefined;
  for (const entry of entries) {
    if (!isPathWithin(path, entry.mountPoint)) continue;
    if (!found || entry.mountPoint.length >= found.mountPoint.length) found = entry;
  }
  return found;
}

/**
 * Mount points at or below `dir`, relative to it: `''` for `dir` itself, else `/a/b`. Stacked and
 * repeated entries count once; the paths are compared as given, so both sides must be in one encoding.
 */
export function mountPointsWithin(entries: readonly MountinfoEntry[], dir: string): Set<string> {
  const found = new Set<string>();
  for (const { mountPoint } of entries) {
    if (isPathWithin(mountPoint, dir)) found.add(dir === '/' ? mountPoint.replace(/^\/$/, '') : mountPoint.slice(dir.length));
  }
  return found;
}
