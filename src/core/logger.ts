export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

/** A logger whose buffered lines can be written out now. */
export interface FlushableLogger extends Logger {
  flush(): void;
}

/** Info lines wait at most this long; warnings and errors are written at once. */
const INFO_DELAY_MS = 100;
/** A buffer this large is written at once. */
const MAX_BUFFERED = 64 * 1024;

/** Loggers holding lines, written out when the process exits (one listener for all of them). */
const pending = new Set<() => void>();
let exitHooked = false;

/**
 * Lines on stderr. Writing to a pipe is synchronous in Node on Linux: a write per info line
 * (one per created or removed volume) cost about 8 % of a Create's CPU, so info lines are
 * buffered briefly and written together. A warning or an error writes the buffer and itself at
 * once, in order; so does the process's exit. A SIGKILL can lose the last 100 ms of info lines.
 */
export function consoleLogger(prefix = 'stowage', write: (text: string) => void = (text) => { process.stderr.write(text); }): FlushableLogger {
  let buffered = '';
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    pending.delete(flush);
    if (buffered === '') return;
    const text = buffered;
    buffered = '';
    write(text);
  };
  const line = (level: string, message: string) => `${new Date().toISOString()} ${prefix} ${level} ${message}\n`;
  return {
    info: (m) => {
      buffered += line('info', m);
      if (buffered.length >= MAX_BUFFERED) return flush();
      if (!timer) {
        pending.add(flush);
        if (!exitHooked) {
          exitHooked = true;
          process.on('exit', () => { for (const f of [...pending]) f(); });
        }
        timer = setTimeout(flush, INFO_DELAY_MS);
        timer.unref();
      }
    },
    warn: (m) => { buffered += line('warn', m); flush(); },
    error: (m) => { buffered += line('error', m); flush(); },
    flush,
  };
}

export const silentLogger: Logger = { info: () => undefined, warn: () => undefined, error: () => undefined };
