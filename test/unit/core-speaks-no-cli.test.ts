/**
 * The core and the backends say what went wrong and return what can be done as data
 * (StowageError.remedies); only the shells name commands and flags. This scan keeps it so.
 */
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '../..');

async function sources(dir: string): Promise<string[]> {
  const entries = await readdir(join(ROOT, dir), { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile() && e.name.endsWith('.ts')).map((e) => join(e.parentPath, e.name));
}

/** Code without comments: comments may say which command shows a fact, messages may not. */
function code(text: string): string {
  // Block comments keep their line breaks so that reported line numbers stay true.
  return text.replace(/\/\*[\s\S]*?\*\//g, (c) => c.replace(/[^\n]/g, '')).replace(/(^|\s)\/\/.*$/gm, '$1');
}

/** The CLI's own words, read from its definition so that a new flag or command is covered too. */
async function cliWords(): Promise<{ commands: Set<string>; flags: Set<string> }> {
  const commands = new Set<string>();
  const flags = new Set<string>();
  for (const file of await sources('src/drivers/cli')) {
    const text = await readFile(file, 'utf8');
    for (const m of text.matchAll(/\.command\('([a-z-]+)/g)) commands.add(m[1]!);
    // "the stowage daemon" is the program's name for itself; starting it with a flag is still caught.
    commands.delete('daemon');
    for (const m of text.matchAll(/(?:\.option|new Option)\('(?:-[a-zA-Z], )?(--[a-z][a-z-]*)/g)) flags.add(m[1]!);
  }
  return { commands, flags };
}

/** Lines of src/core and src/backends that name a CLI command, a CLI flag or a `-o key=` option. */
export async function cliWordsIn(dirs: readonly string[]): Promise<string[]> {
  const { commands, flags } = await cliWords();
  const command = new RegExp(`\\bstowage (${[...commands].join('|')})\\b`);
  // `--name=` is another program's argv (getfattr's), never how this CLI's flags are written.
  const flag = new RegExp(`(${[...flags].join('|')})(?![a-z=-])`);
  const found: string[] = [];
  for (const dir of dirs) {
    for (const file of await sources(dir)) {
      code(await readFile(file, 'utf8')).split('\n').forEach((line, i) => {
        // An argv element is exactly a flag in quotes: that is a program's flag, not advice.
        const advice = line.replace(/'--[a-z][a-z-]*(=[^']*)?'/g, "''");
        if (command.test(advice) || flag.test(advice) || /-o [a-z.]+=/.test(advice)) {
          found.push(`${file.slice(ROOT.length + 1)}:${i + 1}: ${line.trim()}`);
        }
      });
    }
  }
  return found;
}

describe('core and backends speak no CLI', () => {
  it('knows the CLI words it scans for (a broken reader would make the scan pass vacuously)', async () => {
    const { commands, flags } = await cliWords();
    expect([...commands]).toEqual(expect.arrayContaining(['create', 'delete', 'release', 'forget', 'node']));
    expect([...flags]).toEqual(expect.arrayContaining(['--force', '--root', '--opt', '--backend', '--docker-host']));
  });

  it('finds CLI words in a message when there are some', async () => {
    // The shells word remedies: run over them, the scan must find the words they use.
    expect(await cliWordsIn(['src/drivers'])).toEqual(expect.arrayContaining([
      expect.stringMatching(/remedies\.ts:.*delete \$\{remedy\.volume\} --force/),
      expect.stringMatching(/remedies\.ts:.*-o adopt=true/),
    ]));
  });

  it('names no CLI command, CLI flag or -o option in src/core or src/backends', async () => {
    expect(await cliWordsIn(['src/core', 'src/backends'])).toEqual([]);
  });
});
