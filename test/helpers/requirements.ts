/**
 * Gates for test suites that need real system components (a Docker engine,
 * glusterd, ...). Locally a missing component skips the suite loudly; in CI
 * (`STOWAGE_TEST_REQUIRE=1`, set by `.ci/run`) it fails the suite instead, so
 * a broken install can never turn into a silently green run.
 */
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

export interface ComponentCheck {
  ok: boolean;
  why?: string;
}

export const requireSystemComponents: boolean = process.env.STOWAGE_TEST_REQUIRE === '1';

/** Absolute path of an executable found on PATH, or undefined. */
export function findExecutable(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this PATH entry
    }
  }
  return undefined;
}

export function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * What `test/helpers/docker-node.ts` needs: the engine, its CLI, the
 * util-linux namespace tools (setpriv ties helper processes to the test
 * process's life), a static busybox for the test image, and root (mount
 * namespaces and dockerd both need it).
 */
export function checkDocker(): ComponentCheck {
  const missing = ['dockerd', 'docker', 'unshare', 'nsenter', 'setpriv'].filter(
    (tool) => findExecutable(tool) === undefined,
  );
  if (!isExecutable('/bin/busybox')) missing.push('/bin/busybox');
  if (missing.length > 0) {
    return {
      ok: false,
      why: `missing ${missing.join(', ')} (apt-get install -y docker.io busybox-static util-linux)`,
    };
  }
  if (process.getuid?.() !== 0) {
    return { ok: false, why: 'not running as root (private mount namespaces and dockerd need root)' };
  }
  return { ok: true };
}

/**
 * Decide whether a suite needing `component` must be skipped.
 *
 * Usage: `const skip = systemSuite('docker', checkDocker()); describe.skipIf(skip)(...)`.
 * Throws (failing the file at collection time) when the component is missing
 * and `STOWAGE_TEST_REQUIRE=1`.
 */
export function systemSuite(component: string, check: ComponentCheck): boolean {
  if (check.ok) return false;
  const why = check.why ?? 'requirement not met';
  if (requireSystemComponents) {
    throw new Error(
      `[stowage tests] ${component} tests cannot run: ${why}. STOWAGE_TEST_REQUIRE=1 makes this a failure.`,
    );
  }
  process.stderr.write(
    `\n[stowage tests] SKIPPING ${component} tests: ${why}. Set STOWAGE_TEST_REQUIRE=1 to make this a failure.\n\n`,
  );
  return true;
}
