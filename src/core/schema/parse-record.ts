import type { z } from 'zod';
import { ErrorCodes, StowageError } from '../errors.js';

/**
 * The one gate for everything read from shared storage, node-local state files or a request:
 * a zod schema, and an E_STATE_CORRUPT error that names the file and the first problem.
 * Records from shared storage are input from another machine; callers skip-and-report what
 * this rejects, and never follow a value that did not pass through here.
 */
export function parseRecord<S extends z.ZodType>(schema: S, value: unknown, what: string, volume?: string): z.infer<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const { where, message } = firstIssue(result.error);
  throw new StowageError(ErrorCodes.STATE_CORRUPT, `${what} is not in the expected format${where}: ${message}`, { volume });
}

/** The first problem zod found, for messages: where (" at a.b", or "" at the top) and what. */
export function firstIssue(error: z.ZodError): { path: readonly PropertyKey[]; where: string; message: string } {
  const issue = error.issues[0];
  const path = issue?.path ?? [];
  return { path, where: path.length > 0 ? ` at ${path.join('.')}` : '', message: issue?.message ?? 'invalid' };
}

/** Parses JSON text then validates it; bad JSON is E_STATE_CORRUPT too. */
export function parseRecordText<S extends z.ZodType>(schema: S, text: string, what: string, volume?: string): z.infer<S> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new StowageError(ErrorCodes.STATE_CORRUPT, `${what} is not valid JSON`, { volume, cause: err });
  }
  return parseRecord(schema, value, what, volume);
}
