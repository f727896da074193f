/**
 * Backends read a runner failure from its fields (reason, program), not from its wording: a
 * real runner whose programs time out or are missing, and a runner whose failure messages say
 * nothing the old text matching looked for.
 */
import { describe, expect, it } from 'vitest';
import {
  CommandError, ExecaCommandRunner, type CommandOptions, type CommandRunner,
} from '../../src/core/command-runner.js';
import { ErrorCodes } from '../../src/core/errors.js';
import { silentLogger } from '../../src/core/logger.js';
import { GlusterCli } from '../../src/backends/glusterfs/gluster-cli.js';
import { Dmsetup, explainUnavailable } from '../../src/backends/devicemapper/dmsetup.js';

const real = new ExecaCommandRunner();

/** The real runner, running `program` as something else: a hung or a missing tool. */
function standIn(program: string, args: readonly string[], timeoutMs?: number): CommandRunner {
  return { run: (_p, _a, options: CommandOptions = {}) => real.run(program, args, { ...options, ...(timeoutMs ? { timeoutMs } : {}) }) };
}

/** A runner failing with the given reason and a message that names none. */
function failing(reason: CommandError['reason']): CommandRunner {
  return {
    run: (program, args) => Promise.reject(new CommandError({ program, args, reason, stdout: '', stderr: '' }, 'it went wrong')),
  };
}

const glusterConfig = { socket: '/run/gd.sock', logFile: '/dev/null', timeoutMs: 1_000, servers: ['gl1'], nodeId: 'n1' };

describe('gluster CLI failures by reason', () => {
  it('reports a gluster CLI that hangs past its timeout as glusterd not answering', async () => {
    const cli = new GlusterCli(standIn('sleep', ['20'], 300), glusterConfig, silentLogger);
    await expect(cli.call(['volume', 'info'])).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/gluster volume info on node n1 failed: no answer within 6 s/),
    });
  });

  it('reports a missing gluster CLI as one to install', async () => {
    const cli = new GlusterCli(standIn('/nonexistent/gluster', []), glusterConfig, silentLogger);
    await expect(cli.call(['volume', 'info'])).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/could not be run [\s\S]*install glusterfs-server/),
    });
  });

  it('tells a timeout from a spawn failure by the reason alone', async () => {
    await expect(new GlusterCli(failing('timeout'), glusterConfig, silentLogger).call(['pool', 'list']))
      .rejects.toThrow(/no answer within/);
    await expect(new GlusterCli(failing('spawn'), glusterConfig, silentLogger).call(['pool', 'list']))
      .rejects.toThrow(/could not be run/);
  });
});

describe('dmsetup failures by reason', () => {
  it('names the missing program and what to install when dmsetup cannot be started', async () => {
    const dm = new Dmsetup(standIn('/nonexistent/dmsetup', []), { udev: true });
    const err = explainUnavailable(await dm.ls().catch((e: unknown) => e));
    expect(err).toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/^the devicemapper backend needs \/nonexistent\/dmsetup: install dmsetup/),
    });
  });

  it('leaves a timeout as it is: the tool exists, it hung', async () => {
    const err = await new Dmsetup(failing('timeout'), { udev: true }).ls().catch((e: unknown) => e);
    expect(explainUnavailable(err)).toBe(err);
    const spawn = await new Dmsetup(failing('spawn'), { udev: true }).ls().catch((e: unknown) => e);
    expect(explainUnavailable(spawn)).toMatchObject({ code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/needs dmsetup/) });
  });
});
