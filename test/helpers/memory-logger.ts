import type { Logger } from '../../src/core/logger.js';

export interface MemoryLogger extends Logger {
  lines: string[];
}

/** Collects log lines so tests can assert on what a backend told the operator. */
export function memoryLogger(): MemoryLogger {
  const lines: string[] = [];
  return {
    lines,
    info: (m) => lines.push(`info ${m}`),
    warn: (m) => lines.push(`warn ${m}`),
    error: (m) => lines.push(`error ${m}`),
  };
}
