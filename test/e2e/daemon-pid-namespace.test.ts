/**
 * The built daemon as PID 1 of its own PID namespace (as in a container): after kill -9 a new
 * daemon, again PID 1, must start on the same --root; two live daemons on one root must not.
 */
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CLI_PATH, assertCliBuilt, canConnect, cleanEnv, killAllDaemons, makeTempDir, removeTempDir, startDaemon,
} from '../helpers/daemon-process.js';
import { findExecutable, systemSuite } from '../helpers/requirements.js';

const skip = systemSuite('unshare --pid', findExecutable('unshare') && process.getuid?.() === 0
  ? { ok: true } : { ok: false, why: 'needs root and unshare (util-linux)' });

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(skip)('daemon in its own PID namespace', { timeout: 60_000 }, () => {
  let dir: string;
  const children: ResultPromise[] = [];
  beforeAll(async () => {
    assertCliBuilt();
    dir = await makeTempDir('stowage-pidns-');
  });
  afterAll(async () => {
    for (const c of children) c.kill('SIGKILL');
    await Promise.allSettled(children);
    await killAllDaemons();
    await removeTempDir(dir);
  });

  /** `unshare --kill-child`: SIGKILL to unshare is SIGKILL to the daemon, PID 1 inside. */
  async function startAsPid1(socket: string): Promise<{ child: ResultPromise; log: () => string }> {
    const child = execa('unshare', ['--pid', '--fork', '--kill-child', '--mount-proc',
      process.execPath, CLI_PATH, 'daemon', '--root', join(dir, 'root'), '--socket', socket, '--docker-host', 'none'],
    { reject: false, buffer: false, env: cleanEnv(), extendEnv: false, stdin: 'ignore' });
    children.push(child);
    let log = '';
    child.stderr?.on('data', (d: Buffer) => { log += String(d); });
    let ended = false;
    void child.then(() => { ended = true; });
    const deadline = Date.now() + 15_000;
    // The socket can accept before the daemon's "listening on" line has come through the pipe.
    while (!(await canConnect(socket)) || !/listening on/.test(log)) {
      if (ended || Date.now() > deadline) throw new Error(`daemon as PID 1 did not start:\n${log}`);
      await sleep(50);
    }
    return { child, log: () => log };
  }

  it('starts again after kill -9, although the new daemon has the same PID', async () => {
    const socket = join(dir, 'plugin.sock');
    const first = await startAsPid1(socket);
    expect(first.log()).toMatch(/listening on/);
    first.child.kill('SIGKILL');
    await first.child;
    const second = await startAsPid1(socket);
    expect(second.log()).not.toMatch(/another stowage daemon/);
    // While it runs, another daemon on the same root is refused, whatever its socket.
    await expect(startDaemon(join(dir, 'other.sock'), ['--root', join(dir, 'root'), '--docker-host', 'none']))
      .rejects.toThrow(/another stowage daemon \(pid 1\) uses the state root/);
    expect(await canConnect(socket)).toBe(true);
    second.child.kill('SIGTERM');
    await second.child;
  });
});
