import { z } from 'zod';
import { isCommandError, type CommandRunner } from '../command-runner.js';
import { firstLine, messageOf } from '../errors.js';
import { bytesFromName } from './raw-names.js';

/**
 * Extended attributes of a backup's entries: POSIX ACLs (`system.posix_acl_*`), file
 * capabilities (`security.capability`), overlayfs's marks in a Docker-in-Docker volume
 * (`trusted.overlay.*`) and `user.*` attributes. Node has no call to read or set them, so a
 * backup reads them with `getfattr` a batch of entries at a time (xattr-reader.ts) and a
 * restore sets them with `setfattr --restore`, a bounded batch per run (XattrRestorer; both
 * from the `attr` package). Left out: SELinux labels, which belong to the policy of the host a
 * file lives on, NFSv4 ACLs, which only an NFS mount takes, and GlusterFS's own.
 */

/** One attribute: its name, and its value in base64. */
export type Xattr = [name: string, value: string];

/** Names as the kernel's namespaces have them, in characters every tool passes as they are. */
const NAME = /^(user|trusted|security|system)\.[A-Za-z0-9._@:+-]{1,240}$/;
/** The kernel's limit for one value (XATTR_SIZE_MAX). */
const VALUE_MAX = 65_536;
/** An entry's attributes at most, values decoded: what a manifest carries for one path. */
export const ENTRY_XATTR_BYTES_MAX = 65_536;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export const XattrsSchema = z.array(z.tuple([
  z.string().regex(NAME, 'not an extended attribute name stowage backs up'),
  z.string().max(Math.ceil(VALUE_MAX / 3) * 4).regex(BASE64, 'not base64'),
])).min(1).max(64).superRefine((list, ctx) => {
  const names = new Set(list.map(([name]) => name));
  if (names.size !== list.length) ctx.addIssue({ code: 'custom', message: 'an attribute is named twice' });
  const bytes = list.reduce((sum, [name, value]) => sum + name.length + Buffer.byteLength(value, 'base64'), 0);
  if (bytes > ENTRY_XATTR_BYTES_MAX) ctx.addIssue({ code: 'custom', message: `more than ${ENTRY_XATTR_BYTES_MAX} bytes of attributes` });
});

/** What getfattr is asked for (an extended regular expression): the namespaces kept. */
const WANTED = '^(user\\.|trusted\\.|security\\.capability$|system\\.posix_acl_(access|default)$)';

/** A program that could not be started because it is not there (not one that ran out of buffer, say). */
export function notInstalled(err: unknown): boolean {
  return isCommandError(err, 'spawn') && /ENOENT/.test(err.message);
}

/** GlusterFS's own attributes, in the trusted namespace WANTED takes: not the files', never restored. */
function isGlusterOwn(name: string): boolean {
  return name.startsWith('trusted.glusterfs.') || name.startsWith('trusted.gfid') || name.startsWith('trusted.afr.') || name.startsWith('trusted.ec.');
}

/** getfattr's quoting of names and paths: `\ooo` for a byte it escapes. */
function unquote(text: Buffer): Buffer {
  const out: number[] = [];
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i]!;
    const digits = c === 0x5c ? text.subarray(i + 1, i + 4).toString('latin1') : '';
    if (/^[0-7]{3}$/.test(digits)) {
      out.push(parseInt(digits, 8) & 0xff);
      i += 3;
    } else {
      out.push(c);
    }
  }
  return Buffer.from(out);
}

/** setfattr's side of the same quoting, for every byte outside printable ASCII and the backslash. */
function quote(bytes: Buffer): string {
  let out = '';
  for (const c of bytes) out += c < 0x21 || c > 0x7e || c === 0x5c || c === 0x3d ? `\\${c.toString(8).padStart(3, '0')}` : String.fromCharCode(c);
  return out;
}

/** getfattr's options after the program name, before the paths: each path's own attributes. */
export function getfattrArgs(): string[] {
  // -h: a symlink's own attributes. Values in base64. Only the namespaces kept are asked for: a
  // host labelling every file for SELinux would otherwise print a line per file.
  return ['--absolute-names', '-h', '-d', '-m', WANTED, '-e', 'base64', '--'];
}

/** What a getfattr dump holds: each path (as bytes) with its attributes, and how many were refused. */
export interface XattrDump {
  /** Each entry with attributes, and how many of its own were refused (it may have none kept). */
  files: Array<{ path: Buffer; xattrs: Xattr[]; refused: number }>;
  /** Attributes left out: a name outside the namespaces kept, or a value not in base64. */
  refused: number;
}

/** Reads getfattr's output (`bytesOut`: latin1, one character per byte, so names that are not UTF-8 survive). */
export function parseXattrDump(stdout: string): XattrDump {
  const files: XattrDump['files'] = [];
  let path: Buffer | undefined;
  let current: Xattr[] = [];
  let refusedHere = 0;
  let refused = 0;
  const close = () => {
    if (path !== undefined && (current.length > 0 || refusedHere > 0)) files.push({ path, xattrs: current, refused: refusedHere });
    current = [];
    refusedHere = 0;
  };
  for (const line of stdout.split('\n')) {
    if (line.startsWith('# file: ')) {
      close();
      path = unquote(Buffer.from(line.slice(8), 'latin1'));
      continue;
    }
    const eq = line.indexOf('=');
    if (path === undefined || eq < 0) continue;
    const name = unquote(Buffer.from(line.slice(0, eq), 'latin1')).toString('latin1');
    const raw = line.slice(eq + 1);
    if (isGlusterOwn(name)) continue;
    // Base64 ('0s'), or for an empty value nothing at all.
    const value = raw === '' ? '' : raw.startsWith('0s') ? raw.slice(2) : undefined;
    if (!NAME.test(name) || value === undefined || !BASE64.test(value)) {
      refused += 1;
      refusedHere += 1;
      continue;
    }
    current.push([name, value]);
  }
  close();
  return { files, refused };
}

/**
 * Text of one `setfattr --restore` run, at most: a restore of millions of entries with an ACL or
 * a Samba attribute each would otherwise build a string past V8's limit (512 MiB) and fail after
 * all data was written.
 */
export const RESTORE_RUN_CHARS = 8 * 1024 * 1024;

/** The kernel's limit for a path in one call, its closing NUL included. */
const PATH_MAX = 4096;

/**
 * Sets the attributes of restored entries with `setfattr --restore` (the dump on its standard
 * input, every path absolute and quoted), one run per RESTORE_RUN_CHARS of dump. A symlink's are
 * its own (-h). What cannot be set (a namespace the target's file system does not take, a
 * missing setfattr) is returned as warnings, each once: the data is restored either way.
 */
export async function restoreXattrs(commands: CommandRunner, target: string, entries: ReadonlyArray<{ path: string; xattrs: Xattr[] }>, runChars = RESTORE_RUN_CHARS): Promise<string[]> {
  const warnings = new Set<string>();
  let dump = '';
  let inDump = 0;
  let missing = false;
  const run = async () => {
    if (inDump === 0 || missing) return;
    const [input, count] = [dump, inDump];
    [dump, inDump] = ['', 0];
    try {
      const result = await commands.run('setfattr', ['-h', '--restore=-'], { input, allowFailure: true, timeoutMs: 60 * 60 * 1000 });
      if (result.exitCode !== 0) warnings.add(`extended attributes: not all could be set: ${firstLine(result.stderr) || `setfattr exit code ${result.exitCode}`}`);
    } catch (err) {
      missing = notInstalled(err);
      if (missing) warnings.add('extended attributes were not restored: setfattr is not installed (Debian: apt-get install attr)');
      else warnings.add(`extended attributes of ${count} entr${count === 1 ? 'y were' : 'ies were'} not restored: ${messageOf(err)}`);
    }
  };
  let unreachable = 0;
  for (const { path, xattrs } of entries) {
    const bytes = path === '.' ? Buffer.from(target) : Buffer.concat([Buffer.from(`${target}/`), bytesFromName(path)]);
    if (bytes.length >= PATH_MAX) {
      unreachable += 1;
      continue;
    }
    dump += `# file: ${quote(bytes)}\n`;
    for (const [name, value] of xattrs) dump += `${name}=0s${value}\n`;
    dump += '\n';
    inDump += 1;
    if (dump.length >= runChars) await run();
  }
  await run();
  if (unreachable > 0) {
    warnings.add(`extended attributes of ${unreachable} entr${unreachable === 1 ? 'y were' : 'ies were'} not restored: ` +
      `their paths under ${target} are ${PATH_MAX} bytes or longer, more than setfattr can name (the entries themselves are restored)`);
  }
  return [...warnings];
}

/**
 * A restore's attributes, set once what they belong to is written (a file's after its owner,
 * whose change clears a capability): other entries' a batch at a time, so memory holds one
 * batch; directories' at the end, so a default ACL is not inherited by what the backup says a
 * directory holds.
 */
export class XattrRestorer {
  private readonly directories: Array<{ path: string; xattrs: Xattr[] }> = [];
  private batch: Array<{ path: string; xattrs: Xattr[] }> = [];
  private batchChars = 0;
  private readonly warnings = new Set<string>();

  constructor(private readonly commands: () => CommandRunner, private readonly target: string, private readonly runChars = RESTORE_RUN_CHARS) {}

  add(path: string, xattrs: Xattr[], directory: boolean): void {
    if (directory) {
      this.directories.push({ path, xattrs });
      return;
    }
    this.batch.push({ path, xattrs });
    this.batchChars += path.length + xattrs.reduce((sum, [name, value]) => sum + name.length + value.length, 0);
  }

  /** Whether a batch is full: set it once the entry just added is written. */
  get due(): boolean {
    return this.batchChars >= this.runChars;
  }

  /** Sets the batch's attributes after `written` (every file written so far) settles. */
  async setBatch(written: () => Promise<void>): Promise<void> {
    const due = this.batch;
    [this.batch, this.batchChars] = [[], 0];
    await this.set(due, written);
  }

  /** Sets what is left, directories last; returns what could not be set, each once. */
  async finish(written: () => Promise<void>): Promise<string[]> {
    await this.setBatch(written);
    await this.set(this.directories, written);
    return [...this.warnings];
  }

  private async set(entries: Array<{ path: string; xattrs: Xattr[] }>, written: () => Promise<void>): Promise<void> {
    if (entries.length === 0) return;
    await written();
    for (const text of await restoreXattrs(this.commands(), this.target, entries, this.runChars)) this.warnings.add(text);
  }
}

