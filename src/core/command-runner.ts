import { ErrorCodes, StowageError } from './errors.js';

export interface CommandResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export interface CommandOptions {
  /** Milliseconds before the program is killed; every call has one. */
  timeoutMs?: number;
  input?: string;
  env?: Record<string, string>;
  /** Resolve with a non-zero exitCode instead of throwing (for tools whose exit code lies). */
  allowFailure?: boolean;
}

/** The one way stowage runs external programs: argv arrays, never a shell, always a timeout. */
export interface CommandRunner {
  run(program: string, args: readonly string[], options?: CommandOptions): Promise<CommandResult>;
}

export const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;

function firstLine(text: string): string {
  return text.split('\n').map((l) => l.trim()).find((l) => l.length > 0) ?? '';
}

export class ExecaCommandRunner implements CommandRunner {
  async run(program: string, args: readonly string[], options: CommandOptions = {}): Promise<CommandResult> {
    const timeout = options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    const shown = [program, ...args].join(' ');
    // Loaded on first use: execa and its dependencies are a large share of start-up time, and a
    // vfs daemon never runs a program.
    const { execa } = await import('execa');
    const result = await execa(program, [...args], {
      timeout,
      input: options.input,
      env: options.env,
      reject: false,
      stripFinalNewline: true,
      forceKillAfterDelay: 2_000,
    });
    if (result.timedOut) {
      throw new StowageError(ErrorCodes.BACKEND_COMMAND, `${shown} did not finish within ${timeout} ms and was stopped`);
    }
    if (result.failed && result.exitCode === undefined) {
      throw new StowageError(ErrorCodes.BACKEND_COMMAND,
        `cannot run ${program}: ${result.shortMessage ?? 'unknown error'}`, { cause: result });
    }
    const outcome: CommandResult = {
      stdout: String(result.stdout ?? ''),
      stderr: String(result.stderr ?? ''),
      exitCode: result.exitCode ?? -1,
    };
    if (outcome.exitCode !== 0 && !options.allowFailure) {
      const why = firstLine(outcome.stderr) || firstLine(outcome.stdout) || `exit code ${outcome.exitCode}`;
      throw new StowageError(ErrorCodes.BACKEND_COMMAND, `${program} ${args[0] ?? ''} failed: ${why}`, { cause: outcome });
    }
    return outcome;
  }
}
