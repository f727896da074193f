import { AsyncLocalStorage } from 'node:async_hooks';
import { pino, type DestinationStream, type Level } from 'pino';

/** Structured facts of a log line: `volume`, `node`, `operation`, `exitCode`, ... */
export type LogFields = Record<string, unknown>;

export interface Logger {
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
  /** Optional: loggers that keep no debug lines need not have it. */
  debug?(message: string, fields?: LogFields): void;
}

/** A logger whose buffered lines can be written out now. */
export interface FlushableLogger extends Logger {
  debug(message: string, fields?: LogFields): void;
  flush(): void;
  /** Whether lines of `level` are written at all (to skip building costly fields). */
  enabled(level: LogLevel): boolean;
}

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface LoggerOptions {
  /** Lines below this level are dropped. @default info */
  level?: LogLevel;
  /**
   * `json`: one JSON object a line (for journald, docker logs, collectors); `pretty`: a readable
   * line for a person at a terminal. @default pretty when stderr is a terminal, else json
   */
  format?: 'json' | 'pretty';
  /** Fields on every line, e.g. `{ node }`. */
  base?: LogFields;
  /** Where text goes. @default process.stderr */
  write?: (text: string) => void;
}

/**
 * The operation and volume a line concerns, set once where an operation enters the core
 * (see withLogContext) and added to every line logged while it runs, by the core, the backends
 * and the command runner alike.
 */
const context = new AsyncLocalStorage<LogFields>();

/** Runs `work` with `fields` added to every line logged while it runs (nested calls add to the outer fields). */
export function withLogContext<T>(fields: LogFields, work: () => T): T {
  const outer = context.getStore();
  return context.run(outer ? { ...outer, ...fields } : fields, work);
}

/** The fields withLogContext set for the code running now, if any. */
export function currentLogContext(): LogFields | undefined {
  return context.getStore();
}

const REDACTED = '[redacted]';
/** user:password@ in URLs (a backup target's credentials). */
const URL_CREDENTIALS = /\b([a-z][a-z0-9+.-]*:\/\/[^/@\s:]*):[^/@\s]*@/gi;
/** key=value pairs whose key names a secret. */
const SECRET_PAIR = /\b([\w.-]*(?:secret|password|passwd|token|access[_-]?key|credentials?)[\w.-]*)=([^\s&,;]+)/gi;

/** `text` with credentials in URLs and values of secret-named key=value pairs replaced. */
export function redactText(text: string): string {
  if (!text.includes('@') && !text.includes('=')) return text;
  return text.replace(URL_CREDENTIALS, `$1:${REDACTED}@`).replace(SECRET_PAIR, `$1=${REDACTED}`);
}

/** Structured fields that never reach a log line, whatever their value. */
const REDACT_PATHS = [
  'password', '*.password', 'secret', '*.secret', 'secretAccessKey', '*.secretAccessKey', 'accessKeyId', '*.accessKeyId',
  'token', '*.token', 'authorization', '*.authorization', 'env', '*.env', 'input', '*.input', 'credentials', '*.credentials',
];

/** Info lines wait at most this long; warnings and errors are written at once. */
const INFO_DELAY_MS = 100;
/** A buffer this large is written at once. */
const MAX_BUFFERED = 64 * 1024;

/** Buffers holding lines, written out when the process exits (one listener for all of them). */
const pending = new Set<() => void>();
let exitHooked = false;

/**
 * Writing to a pipe is synchronous in Node on Linux: a write per info line (one per created or
 * removed volume) cost about 8 % of a Create's CPU, so lines are held briefly and written
 * together. A warning or an error writes the buffer at once, in order; so does the process's
 * exit. A SIGKILL can lose the last 100 ms of info lines. (pino's own asynchronous destination
 * would do the same with less control over when; this keeps the behaviour the daemon had.)
 */
class BufferedWriter implements DestinationStream {
  private buffered = '';
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly out: (text: string) => void) {}

  write(text: string): void {
    this.buffered += text;
    if (this.buffered.length >= MAX_BUFFERED) return this.flush();
    if (!this.timer) {
      pending.add(this.flush);
      if (!exitHooked) {
        exitHooked = true;
        process.on('exit', () => { for (const f of [...pending]) f(); });
      }
      this.timer = setTimeout(this.flush, INFO_DELAY_MS);
      this.timer.unref();
    }
  }

  readonly flush = (): void => {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    pending.delete(this.flush);
    if (this.buffered === '') return;
    const text = this.buffered;
    this.buffered = '';
    this.out(text);
  };
}

/** Fields the readable format shows in its line's head rather than as key=value. */
const HEAD_FIELDS = new Set(['time', 'level', 'msg', 'pid', 'hostname']);

/**
 * One JSON line as a person reads it: `time LEVEL message key=value ...`. Written without
 * pino-pretty, whose transport runs in a worker thread: a terminal needs no more than this.
 */
export function prettyLine(json: string): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const fields = Object.entries(entry)
    .filter(([key]) => !HEAD_FIELDS.has(key))
    .map(([key, value]) => `${key}=${typeof value === 'string' && !/[\s"]/.test(value) ? value : JSON.stringify(value)}`);
  const level = String(entry.level ?? 'info').toUpperCase().padEnd(5);
  return `${String(entry.time ?? '')} ${level} ${String(entry.msg ?? '')}${fields.length > 0 ? `  ${fields.join(' ')}` : ''}\n`;
}

/**
 * The daemon's logger: pino, one JSON object a line (`time`, `level`, `msg`, then the fields:
 * `node`, and `operation` and `volume` for lines logged during an operation), or a readable line
 * on a terminal. Lines are held as described at BufferedWriter; secrets are redacted from
 * messages and from fields (REDACT_PATHS).
 */
export function consoleLogger(options: LoggerOptions = {}): FlushableLogger {
  const out = options.write ?? ((text: string) => { process.stderr.write(text); });
  const format = options.format ?? (process.stderr.isTTY ? 'pretty' : 'json');
  const writer = new BufferedWriter(format === 'pretty'
    ? (text) => out(text.split('\n').filter((l) => l !== '').map(prettyLine).join(''))
    : out);
  const log = pino({
    level: options.level ?? 'info',
    base: options.base ?? null,
    timestamp: pino.stdTimeFunctions.isoTime,
    messageKey: 'msg',
    formatters: { level: (label) => ({ level: label }) },
    mixin: () => context.getStore() ?? {},
    redact: { paths: REDACT_PATHS, censor: REDACTED },
  }, writer);
  const emit = (level: Level, message: string, fields?: LogFields) => {
    if (fields) log[level](fields, redactText(message));
    else log[level](redactText(message));
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => { emit('warn', m, f); writer.flush(); },
    error: (m, f) => { emit('error', m, f); writer.flush(); },
    flush: writer.flush,
    enabled: (level) => level !== 'silent' && log.isLevelEnabled(level),
  };
}

export const silentLogger: Logger = { info: () => undefined, warn: () => undefined, error: () => undefined };
