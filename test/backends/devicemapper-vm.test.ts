/**
 * The devicemapper backend on a real kernel. The machines' own kernels have no device-mapper,
 * so this boots the test VM (test/vm/: qemu, Debian's kernel, the host root over 9p) ONCE and
 * runs every test/vm/guest/*.guest.ts inside it with vitest: the conformance suite on a real
 * thin pool, reboots, snapshots (also as backup sources), full pools, busy devices, and the
 * daemon over its plugin socket.
 * Each guest test result becomes an assertion here. Needs root, qemu-system-x86,
 * thin-provisioning-tools, busybox-static and apt package lists (checkDmVm).
 *
 * STOWAGE_VM_FILTER=pool runs only matching guest files; STOWAGE_VM_VERBOSE=1 streams the console.
 */
import { readdirSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GUEST_RUNNER, VM_DIR, ensureVmImage, runInVm, type VmRun } from '../vm/dm-vm.js';
import { assertCliBuilt } from '../helpers/daemon-process.js';
import { checkDmVm, systemSuite } from '../helpers/requirements.js';

interface GuestAssertion {
  fullName: string;
  status: string;
  failureMessages: string[];
  duration?: number;
}
interface GuestFileResult {
  name: string;
  status: string;
  message?: string;
  assertionResults: GuestAssertion[];
}
interface GuestReport {
  success: boolean;
  numTotalTests: number;
  numFailedTests: number;
  testResults: GuestFileResult[];
}

/**
 * A full run takes about 7 minutes under TCG on an idle machine, and over twice that when the
 * machine is busy (emulation is CPU-bound); this only stops a hung guest.
 */
const VM_TIMEOUT_MS = (process.env.STOWAGE_VM_BENCH === '1' ? 90 : 30) * 60_000;
const filter = process.env.STOWAGE_VM_FILTER?.trim();
/** STOWAGE_VM_BENCH=1 runs the guest benchmarks (*.bench-guest.ts) instead of the tests, in a larger VM. */
const bench = process.env.STOWAGE_VM_BENCH === '1';
const guestFiles = readdirSync(join(VM_DIR, 'guest')).filter((f) => f.endsWith(bench ? '.bench-guest.ts' : '.guest.ts')).sort();
const skip = systemSuite('devicemapper (test VM)', checkDmVm());

describe.skipIf(skip)('devicemapper backend on a real kernel (test VM, booted once)', () => {
  let work = '';
  let run: VmRun | undefined;
  let report: GuestReport | undefined;
  let setupError: Error | undefined;
  const tail = () => (run ? run.console.split('\n').slice(-60).join('\n') : `no VM run: ${setupError?.message ?? 'unknown'}`);

  beforeAll(async () => {
    try {
      assertCliBuilt();
      const say = (line: string) => process.stderr.write(`[dm-vm] ${line}\n`);
      const image = await ensureVmImage(say);
      work = await mkdtemp(join(tmpdir(), 'stowage-dmvm-run-'));
      const env = [...(filter ? [`STOWAGE_VM_FILTER=${JSON.stringify(filter)}`] : []), ...(bench ? ['export STOWAGE_VM_BENCH=1'] : [])];
      if (env.length > 0) await writeFile(join(work, 'guest-env'), `${env.join('\n')}\n`);
      say(`booting kernel ${image.kernelVersion} to run ${filter ? `guest files matching "${filter}"` : 'all guest tests'} (work dir ${work})`);
      run = await runInVm({
        image, work, command: GUEST_RUNNER, timeoutMs: VM_TIMEOUT_MS, ...(bench ? { memoryMb: 6144 } : {}),
        ...(process.env.STOWAGE_VM_VERBOSE === '1' ? { onLine: (line: string) => say(line) } : {}),
      });
      if (bench) {
        const figures = await readFile(join(work, 'block-bench.json'), 'utf8').catch(() => undefined);
        if (figures !== undefined) say(`block-backup benchmark:\n${figures}`);
      }
      const text = await readFile(join(work, 'report.json'), 'utf8').catch(() => undefined);
      report = text === undefined ? undefined : (JSON.parse(text) as GuestReport);
      say(`guest finished in ${run.seconds.toFixed(0)} s: ${report ? `${report.numTotalTests} tests, ${report.numFailedTests} failed` : 'no report'}`);
    } catch (err) {
      setupError = err as Error;
    }
  }, VM_TIMEOUT_MS + 5 * 60_000);

  afterAll(async () => {
    // Keep the work dir (serial.log, report.json) when something went wrong.
    if (work && report?.success && run?.exitCode === 0) await rm(work, { recursive: true, force: true });
    else if (work) process.stderr.write(`[dm-vm] guest console and report kept in ${work}\n`);
  });

  it('boots, runs the guest tests to the end and reports them', () => {
    expect(setupError, setupError?.stack).toBeUndefined();
    expect(run?.timedOut, `the VM did not finish within ${VM_TIMEOUT_MS / 60_000} min:\n${tail()}`).toBe(false);
    expect(report, `the guest wrote no report.json:\n${tail()}`).toBeDefined();
    expect(run?.exitCode, `guest exit code; console:\n${tail()}`).toBe(report?.success ? 0 : 1);
    expect(report!.numTotalTests).toBeGreaterThan(0);
  });

  for (const file of guestFiles) {
    const selected = !filter || filter.split(/\s+/).some((f) => file.includes(f));
    it.skipIf(!selected)(`guest: ${file}`, () => {
      const result = report?.testResults.find((r) => r.name.endsWith(`/test/vm/guest/${file}`));
      expect(result, `no results for ${file} from the guest:\n${tail()}`).toBeDefined();
      if (result!.assertionResults.length === 0) expect.fail(`${file} ran no tests: ${result!.message ?? ''}\n${tail()}`);
      for (const test of result!.assertionResults) {
        // The conformance suite skips, by design, the checks whose hook a backend cannot give
        // (devicemapper: no data can precede a thin device, no cluster lock); any other skip fails.
        const allowed = test.fullName.startsWith('Backend conformance:') ? ['passed', 'skipped'] : ['passed'];
        expect.soft(allowed, `${test.fullName}\n${test.failureMessages.join('\n')}`).toContain(test.status);
      }
      expect(result!.status, result!.message ?? '').toBe('passed');
    });
  }
});
