import { describe, expect, it } from 'vitest';
import { CommandError, ExecaCommandRunner } from '../../src/core/command-runner.js';
import { ErrorCodes } from '../../src/core/errors.js';

describe('ExecaCommandRunner', () => {
  const runner = new ExecaCommandRunner();

  it('passes arguments as an argv array, never through a shell', async () => {
    const result = await runner.run('printf', ['%s|', 'a b', '$(echo pwned)', ';rm -rf /']);
    expect(result.stdout).toBe('a b|$(echo pwned)|;rm -rf /|');
  });

  it('turns a failing exit code into E_BACKEND_COMMAND with the first stderr line', async () => {
    await expect(runner.run('sh', ['-c', 'echo "first problem" >&2; echo second >&2; exit 3']))
      .rejects.toMatchObject({ code: ErrorCodes.BACKEND_COMMAND, message: expect.stringMatching(/failed: first problem$/) });
  });

  it('returns the exit code when failure is allowed', async () => {
    const result = await runner.run('sh', ['-c', 'exit 4'], { allowFailure: true });
    expect(result.exitCode).toBe(4);
  });

  it('stops a program that exceeds its timeout', async () => {
    const started = Date.now();
    await expect(runner.run('sleep', ['20'], { timeoutMs: 200 })).rejects.toThrow(/did not finish within 200 ms/);
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('reports a program that cannot be started', async () => {
    await expect(runner.run('/nonexistent/tool', [])).rejects.toMatchObject({ code: ErrorCodes.BACKEND_COMMAND });
  });

  // Callers branch on these fields, never on the message (gluster-cli.ts, dmsetup.ts).
  it('says a failing exit is an exit, with the program, its exit code and both outputs', async () => {
    const err = await runner.run('sh', ['-c', 'echo out; echo oops >&2; exit 3']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandError);
    expect(err).toMatchObject({ code: ErrorCodes.BACKEND_COMMAND, program: 'sh', reason: 'exit', exitCode: 3, stdout: 'out', stderr: 'oops' });
    expect((err as CommandError).args).toEqual(['-c', 'echo out; echo oops >&2; exit 3']);
  });

  it('says a program stopped at its timeout timed out, with no exit code', async () => {
    const err = await runner.run('sh', ['-c', 'echo partial; exec sleep 20'], { timeoutMs: 300 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ program: 'sh', reason: 'timeout', exitCode: undefined, stdout: 'partial' });
  });

  it('says a program that cannot start could not be spawned, naming it', async () => {
    const err = await runner.run('/nonexistent/tool', ['x']).catch((e: unknown) => e);
    expect(err).toMatchObject({ program: '/nonexistent/tool', reason: 'spawn', exitCode: undefined });
  });
});
