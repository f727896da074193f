/**
 * The npm package as a user installs it: `npm pack` of this tree installed into a temporary
 * project with install scripts off (nothing is built on the user's machine), then used as a CLI
 * (`npx stowage`), as a library (`import { createStowage } from 'stowage'`), and as the source of
 * the systemd units.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, realpath, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO, npmEnv, packPackage, type PackedPackage } from '../helpers/packed-package.js';

interface Manifest {
  version: string;
  scripts?: Record<string, string>;
  files: string[];
  bin: Record<string, string>;
}

describe('the packed npm package, installed into another project', () => {
  let tmp: string;
  let project: string;
  let packed: PackedPackage;
  const installed = () => join(project, 'node_modules/stowage');
  const run = (file: string, args: string[]) =>
    execa(file, args, { cwd: project, env: npmEnv, extendEnv: false, reject: false, all: true, timeout: 120_000 });

  beforeAll(async () => {
    tmp = await realpath(await mkdtemp(join(tmpdir(), 'stowage-pkg-')));
    packed = await packPackage(tmp);
    project = join(tmp, 'project');
    await mkdir(project);
    await execa('npm', ['init', '-y'], { cwd: project, env: npmEnv, extendEnv: false });
    await execa('npm', ['pkg', 'set', 'type=module'], { cwd: project, env: npmEnv, extendEnv: false });
    // --ignore-scripts: whatever the package would run on install is not run, so a package
    // that needed a build step here would fail the checks below.
    await execa('npm', ['install', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund', packed.tarball],
      { cwd: project, env: npmEnv, extendEnv: false });
  }, 600_000);
  afterAll(async () => {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('holds the built CLI and library, the systemd units and the plugin config, and no sources or tests', () => {
    expect(packed.files).toEqual(expect.arrayContaining([
      'package.json', 'README.md', 'dist/bin/stowage.mjs', 'dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/testing/index.js',
      'systemd/stowage.socket', 'systemd/stowage.service', 'systemd/stowage.env',
      // The managed plugin's config.json, for `docker plugin create` from the installed package.
      'plugin/config.json',
    ]));
    const outside = packed.files.filter((f) => !/^(dist\/(src|bin)\/|systemd\/|plugin\/config\.json$|package\.json$|README\.md$)/.test(f));
    expect(outside).toEqual([]);
    expect(packed.files.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))).toEqual([]);
  });

  it('runs nothing at install time: no install scripts, and the build is already in it', async () => {
    const manifest = JSON.parse(await readFile(join(installed(), 'package.json'), 'utf8')) as Manifest;
    for (const hook of ['preinstall', 'install', 'postinstall']) expect(manifest.scripts?.[hook], hook).toBeUndefined();
    expect(manifest.bin).toEqual({ stowage: 'dist/bin/stowage.mjs' });
    expect(((await stat(join(installed(), 'dist/bin/stowage.mjs'))).mode & 0o111) !== 0).toBe(true);
  });

  it('npx stowage --version prints the package version', async () => {
    const { version } = JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8')) as Manifest;
    const result = await run('npx', ['--no-install', 'stowage', '--version']);
    expect(result.exitCode, result.all).toBe(0);
    expect(result.stdout.trim()).toBe(version);
  });

  it('import { createStowage } from \'stowage\' creates a volume in a vfs directory', async () => {
    const store = join(tmp, 'store');
    const script = [
      "import { createStowage, StowageError } from 'stowage';",
      "// With -e, process.argv holds no script name: the arguments start at index 1.",
      'const [store, root] = process.argv.slice(1);',
      "if (!store || !root) throw new Error('expected STORE ROOT arguments');",
      "const stowage = await createStowage({ backend: 'vfs', options: { 'vfs.path': store }, root, nodeId: 'pkg-node' });",
      "await stowage.create('from-package', { mode: '750' });",
      "const path = await stowage.mount('from-package', 'm1');",
      "await stowage.unmount('from-package', 'm1');",
      "const bad = await stowage.create('-bad').catch((e) => e);",
      "console.log(JSON.stringify({ path, names: (await stowage.list()).map((v) => v.name), badCode: bad instanceof StowageError ? bad.code : String(bad) }));",
      'await stowage.close();',
    ].join('\n');
    const result = await run('node', ['--input-type=module', '-e', script, store, join(tmp, 'lib-root')]);
    expect(result.exitCode, result.all).toBe(0);
    const answer = JSON.parse(result.stdout) as { path: string; names: string[]; badCode: string };
    expect(answer).toEqual({ path: join(store, 'from-package'), names: ['from-package'], badCode: 'E_INVALID_NAME' });
    const dir = await stat(join(store, 'from-package'));
    expect(dir.isDirectory()).toBe(true);
    expect(dir.mode & 0o777).toBe(0o750);
  });

  it('npx stowage install-service writes units that run the installed package', async () => {
    const dest = join(tmp, 'units');
    await mkdir(dest);
    const env = join(tmp, 'etc/stowage.env');
    const result = await run('npx', ['--no-install', 'stowage', 'install-service', '--dest', dest, '--environment-file', env]);
    expect(result.exitCode, result.all).toBe(0);
    const service = await readFile(join(dest, 'stowage.service'), 'utf8');
    expect(service).toMatch(new RegExp(`^ExecStart=${process.execPath} ${installed()}/dist/bin/stowage\\.mjs daemon$`, 'm'));
    expect(await readFile(env, 'utf8')).toBe(await readFile(join(installed(), 'systemd/stowage.env'), 'utf8'));
    expect(existsSync(join(installed(), 'systemd/stowage.socket'))).toBe(true);
  });
});
