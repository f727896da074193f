import { StowageError, type ErrorCode, type Remedy } from '../../core/errors.js';
import { wordError, wordFailure, wordRemedy } from '../remedies.js';
import { ControlError, type ControlFailureKind } from './client.js';

/**
 * A failed verb as `--json` prints it (on stderr, so standard output holds only answers):
 * `code` is one of ErrorCodes when the daemon or the core named one, else null (a socket that
 * does not answer, a bad flag); `kind` says where it failed (`refused` by the daemon,
 * `unreachable`, `unreadable`, `usage` for a command line the CLI refuses (two sizes, two
 * names), or `local` for anything else the CLI itself found); each remedy carries `hint`, the
 * clause the plain line shows for it; `text` is the whole plain line.
 */
export interface FailureJson {
  error: {
    code: ErrorCode | null;
    kind: ControlFailureKind | 'usage' | 'local';
    message: string;
    remedies: (Remedy & { hint: string })[];
    text: string;
  };
}

const withHints = (remedies: readonly Remedy[]) => remedies.map((remedy) => ({ ...remedy, hint: wordRemedy(remedy, 'cli') }));

export function failureText(err: unknown): string {
  return err instanceof ControlError ? wordFailure(err.message, err.remedies, 'cli') : wordError(err, 'cli');
}

export function failureJson(err: unknown): FailureJson {
  const text = failureText(err);
  if (err instanceof ControlError) {
    return { error: { code: err.code ?? null, kind: err.kind, message: err.message, remedies: withHints(err.remedies), text } };
  }
  if (err instanceof StowageError) {
    return { error: { code: err.code, kind: 'local', message: err.message, remedies: withHints(err.remedies), text } };
  }
  return { error: { code: null, kind: 'local', message: text, remedies: [], text } };
}

/** A command line refused with commander's `error: ...` line, as `--json` prints it. */
export function usageFailureJson(line: string): FailureJson {
  const message = line.trim().replace(/^error: /, '');
  return { error: { code: null, kind: 'usage', message, remedies: [], text: message } };
}
