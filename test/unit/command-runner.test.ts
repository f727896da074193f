import { describe, expect, it } from 'vitest';
import { ExecaCommandRunner } from '../../src/core/command-runner.js';
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
});
