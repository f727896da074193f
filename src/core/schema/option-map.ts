import { z } from 'zod';
import { ErrorCodes, StowageError } from '../errors.js';

/**
 * Parses one option value. Throws `invalidOption(...)` with the sentence the user sees: the
 * same parsers serve option maps and single values checked elsewhere (per-volume options).
 */
export type OptionParser<T> = (value: string, key: string) => T;

/** The parsed map: each known key that was given, as its parser's type. */
export type ParsedOptions<P extends Record<string, OptionParser<unknown>>> = { [K in keyof P]?: ReturnType<P[K]> };

export function invalidOption(message: string): StowageError {
  return new StowageError(ErrorCodes.INVALID_OPTION, message);
}

/**
 * The one boolean rule of every option map: exactly `true` or `false`, as the documentation
 * writes them. One spelling per value keeps `--opt` maps, Docker `Opts` and the API alike.
 */
export function parseBoolOption(value: string, label: string, expected = 'true or false'): boolean {
  if (value === 'true' || value === 'false') return value === 'true';
  throw invalidOption(`${label}=${JSON.stringify(value)}: expected ${expected}`);
}

/** The parser's own sentence, as a zod issue, so the map reports it unchanged. */
function valueSchema(key: string, parse: OptionParser<unknown>) {
  return z.union([z.string(), z.number(), z.boolean()], { error: `option ${key}: the value must be a string` })
    .transform((value, ctx) => {
      try {
        return parse(String(value), key);
      } catch (err) {
        if (!(err instanceof StowageError)) throw err;
        ctx.addIssue({ code: 'custom', message: err.message });
        return z.NEVER;
      }
    })
    .optional();
}

export interface OptionMap<P extends Record<string, OptionParser<unknown>>> {
  readonly keys: readonly string[];
  /**
   * Validates a map of option strings (Docker `Opts`, `--opt` pairs, the API's maps; numbers and
   * booleans are taken as their text). Unknown keys are an error naming the known ones, so a
   * typo never silently drops a setting; the first problem is reported, unknown keys first.
   */
  parse(raw: unknown): ParsedOptions<P>;
}

/**
 * Declares an option map: its known keys, each with its parser. `what` names the map in
 * messages ("unknown vfs option ...").
 */
/** An object literal, JSON.parse's output or a prototype-less map: nothing inherited, no getters of a class. */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

export function optionMap<P extends Record<string, OptionParser<unknown>>>(what: string, parsers: P,
  /** Keys taken off before this map parses (a restore's `backup`), named in the hint all the same. */
  takenBefore: readonly string[] = []): OptionMap<P> {
  const keys = Object.keys(parsers);
  const hint = [...keys, ...takenBefore];
  const shape = Object.fromEntries(keys.map((key) => [key, valueSchema(key, parsers[key]!)]));
  const schema = z.strictObject(shape, {
    error: (issue) => issue.code === 'unrecognized_keys'
      ? `unknown ${what} option ${JSON.stringify(issue.keys[0])}; known options: ${hint.join(', ')}`
      : `${what} options must be a map of option names to string values`,
  });
  return {
    keys,
    parse(raw: unknown): ParsedOptions<P> {
      if (raw === undefined || raw === null) return {};
      // A Map or a class instance would be read through its getters and inherited properties
      // (a Map's `size` is its entry count): only a plain map of names to values is options.
      if (!isPlainObject(raw)) throw invalidOption(`${what} options must be a map of option names to string values`);
      const result = schema.safeParse(raw);
      if (result.success) return result.data as ParsedOptions<P>;
      const issues = result.error.issues;
      const issue = issues.find((i) => i.code === 'unrecognized_keys') ?? issues[0]!;
      throw invalidOption(issue.message);
    },
  };
}
