import { ErrorCodes, StowageError, firstLine } from './errors.js';
import { redactText, type Logger } from './logger.js';
import { importLazily } from './lazy-import.js';

export interface CommandResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export interface CommandOptions {
  /** Milliseconds before the program is killed; every call has one. */
  timeoutMs?: number;
  /** Standard input: text, or bytes (file names that are not UTF-8). */
  input?: string | Uint8Array;
  env?: Record<string, string>;
  /** Resolve with a non-zero exitCode instead of throwing (for tools whose exit code lies). */
  allowFailure?: boolean;
  /** stdout as latin1, one character per byte: for output that holds file names as bytes. */
  bytesOut?: boolean;
  /** Characters of stdout (and of stderr) kept at most; past it the program fails with `output`. */
  maxOutputBytes?: number;
}

/** The one way stowage runs external programs: argv arrays, never a shell, always a timeout. */
export interface CommandRunner {
  run(program: string, args: readonly string[], options?: CommandOptions): Promise<CommandResult>;
}

export const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;

/**
 * Why a program gave no usable answer: it was stopped at its timeout, it could not be started
 * (missing, not executable), it exited non-zero (only without `allowFailure`), or it wrote more
 * than `maxOutputBytes` (what it wrote is then cut short, so none of it is an answer).
 */
export type CommandFailureReason = 'timeout' | 'spawn' | 'exit' | 'output';

export interface CommandFailure {
  program: string;
  args: readonly string[];
  reason: CommandFailureReason;
  /** Set for `exit`; a program stopped or never started has none. */
  exitCode?: number;
  stdout: string;
  stderr: string;
}

/**
 * A runner failure as data: callers branch on `reason`, `program` and `exitCode`, never on the
 * message, which is for people and may change.
 */
export class CommandError extends StowageError {
  readonly program: string;
  readonly args: readonly string[];
  readonly reason: CommandFailureReason;
  readonly exitCode?: number;
  readonly stdout: string;
  readonly stderr: string;

  constructor(failure: CommandFailure, message: string, cause?: unknown) {
    super(ErrorCodes.BACKEND_COMMAND, message, { cause });
    this.name = 'CommandError';
    this.program = failure.program;
    this.args = failure.args;
    this.reason = failure.reason;
    this.exitCode = failure.exitCode;
    this.stdout = failure.stdout;
    this.stderr = failure.stderr;
  }
}

export function isCommandError(err: unknown, reason?: CommandFailureReason): err is CommandError {
  return err instanceof CommandError && (reason === undefined || err.reason === reason);
}

export class ExecaCommandRunner implements CommandRunner {
  /** `log`: every program run is logged at debug with its argv, exit code and duration (never its input or env). */
  constructor(private readonly log?: Logger) {}

  async run(program: string, args: readonly string[], options: CommandOptions = {}): Promise<CommandResult> {
    const timeout = options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    // Loaded on first use: execa and its dependencies are a large share of start-up time, and a
    // vfs daemon never runs a program.
    const { execa } = await importLazily(() => import('execa'), 'execa (to run programs)');
    const started = performance.now();
    const result = await execa(program, [...args], {
      timeout,
      input: options.input,
      env: options.env,
      reject: false,
      stripFinalNewline: true,
      forceKillAfterDelay: 2_000,
      ...(options.bytesOut ? { encoding: 'latin1' as const } : {}),
      ...(options.maxOutputBytes !== undefined ? { maxBuffer: options.maxOutputBytes } : {}),
    });
    const stdout = String(result.stdout ?? '');
    const stderr = String(result.stderr ?? '');
    this.log?.debug?.(`ran ${program}`, {
      argv: [program, ...args].map(redactText),
      exitCode: result.exitCode ?? null,
      durationMs: Math.round((performance.now() - started) * 10) / 10,
      ...(result.timedOut ? { timedOut: true } : {}),
      ...(result.exitCode === undefined && result.failed ? { spawnError: redactText(result.shortMessage ?? 'unknown error') } : {}),
      ...(result.exitCode !== 0 && stderr !== '' ? { stderr: redactText(firstLine(stderr)) } : {}),
    });
    const failure = { program, args: [...args], stdout, stderr };
    if (result.timedOut) {
      throw new CommandError({ ...failure, reason: 'timeout' },
        `${[program, ...args].join(' ')} did not finish within ${timeout} ms and was stopped`);
    }
    if (result.isMaxBuffer) {
      throw new CommandError({ ...failure, reason: 'output' },
        `${program} wrote more than ${options.maxOutputBytes ?? 'the allowed'} bytes of output and was stopped`);
    }
    if (result.failed && result.exitCode === undefined) {
      throw new CommandError({ ...failure, reason: 'spawn' },
        `cannot run ${program}: ${result.shortMessage ?? 'unknown error'}`, result);
    }
    const outcome: CommandResult = { stdout, stderr, exitCode: result.exitCode ?? -1 };
    if (outcome.exitCode !== 0 && !options.allowFailure) {
      const why = firstLine(stderr) || firstLine(stdout) || `exit code ${outcome.exitCode}`;
      throw new CommandError({ ...failure, reason: 'exit', exitCode: outcome.exitCode },
        `${program} ${args[0] ?? ''} failed: ${why}`, outcome);
    }
    return outcome;
  }
}
