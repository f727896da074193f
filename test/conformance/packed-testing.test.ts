/**
 * `stowage/testing` as an embedder gets it: the packed package installed into a temporary
 * project, whose own custom Backend (test/conformance/embedder/) runs the conformance suite
 * with that project's vitest; a deliberately broken variant must fail it.
 */
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { npmEnv as cleanEnv, packPackage } from '../helpers/packed-package.js';

const FIXTURES = join(import.meta.dirname, 'embedder');
const require = createRequire(import.meta.url);
/** The versions this project is built and tested with, so npm finds them in its cache. */
const version = (name: string) => (require(`${name}/package.json`) as { version: string }).version;

interface VitestJson {
  numFailedTests: number;
  numPendingTests: number;
  numPassedTests: number;
  testResults: { assertionResults: { title: string; status: string }[] }[];
}

describe('stowage/testing, installed from the packed package into another project', () => {
  let tmp: string;
  let project: string;
  const run = (file: string, args: string[]) => execa(file, args, { cwd: project, env: cleanEnv, extendEnv: false, reject: false, all: true });

  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'stowage-embedder-'));
    // npm pack runs `prepare` (the build), so the tarball holds this tree's code.
    const { tarball } = await packPackage(tmp);
    project = join(tmp, 'embedder');
    await mkdir(project);
    await execa('npm', ['init', '-y'], { cwd: project });
    await execa('npm', ['pkg', 'set', 'type=module'], { cwd: project });
    // The registry's packages, at the versions already in npm's cache from this project's install.
    await execa('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball,
      `vitest@${version('vitest')}`, `typescript@${version('typescript')}`, `@types/node@${version('@types/node')}`], { cwd: project });
    for (const file of await readdir(FIXTURES)) await copyFile(join(FIXTURES, file), join(project, file));
  }, 600_000);
  afterAll(async () => {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  const vitest = async (spec: string) => {
    const result = await run('node', ['node_modules/vitest/vitest.mjs', 'run', spec, '--reporter=json', `--outputFile=${spec}.json`]);
    const report = JSON.parse(await readFile(join(project, `${spec}.json`), 'utf8')) as VitestJson;
    const byStatus = (status: string) => report.testResults.flatMap((f) => f.assertionResults).filter((t) => t.status === status).map((t) => t.title);
    return { result, report, byStatus };
  };

  it('the installed package exports the suites', async () => {
    const manifest = JSON.parse(await readFile(join(project, 'node_modules/stowage/package.json'), 'utf8')) as { exports: Record<string, unknown> };
    expect(Object.keys(manifest.exports)).toEqual(['.', './testing']);
    const listed = await run('node', ['--input-type=module', '-e',
      "const t = await import('stowage/testing'); const s = await import('stowage'); console.log(Object.keys(t).sort().join(), typeof s.createStowage)"]);
    expect(listed.stdout).toBe('describeBackendConformance,describeBackupConformance,describeBlobStoreConformance,describeSharedStoreConformance,describeSnapshotConformance function');
  });

  it('the custom backend and its suite file typecheck against the published types', async () => {
    const tsc = await run('node', ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json']);
    expect(tsc.all).toBe('');
    expect(tsc.exitCode).toBe(0);
  });

  it('the suite passes on a working custom backend, every check run but the cluster one', async () => {
    const { result, report, byStatus } = await vitest('memory.spec.ts');
    expect(result.exitCode, result.all).toBe(0);
    expect(report.numFailedTests).toBe(0);
    // A local backend without a cluster state directory has no lease to lose.
    expect(report.numPendingTests).toBe(1);
    expect([...byStatus('skipped'), ...byStatus('pending')]).toEqual(['remove with a lost lease (cluster-protected backends) fails, moving and deleting nothing']);
    expect(byStatus('passed')).toEqual(expect.arrayContaining([
      'create refuses data already where the volume would go with E_DATA_CONFLICT, changing nothing',
      'dispose waits for background work: no deleted file is left once it returns',
      'init fails with E_BACKEND_UNAVAILABLE naming what is missing',
    ]));
  });

  it('the suite fails on a custom backend that reuses a taken name, naming the check it broke', async () => {
    const { result, byStatus } = await vitest('broken.spec.ts');
    expect(result.exitCode).not.toBe(0);
    expect(byStatus('failed')).toEqual(['create of a registered name fails with E_VOLUME_EXISTS and keeps the first volume']);
  });
});
