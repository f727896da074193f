/**
 * Faults for cluster-lock tests on real file systems: a view of the file system whose calls
 * under one directory can be held (a stalled client, a paused process) or failed (the lock
 * directory unreachable from one node), and a command runner that holds one chosen call.
 */
import { constants } from 'node:fs';
import { sep } from 'node:path';
import type { CommandOptions, CommandResult, CommandRunner } from '../../src/core/command-runner.js';
import type { FsPort } from '../../src/core/fs-port.js';

export type FaultMode = 'pass' | 'hold-writes' | 'fail';

export interface FaultyFs {
  fs: FsPort;
  /** `hold-writes`: calls that change files under the directory wait until the mode changes back. */
  set(mode: FaultMode): void;
  /** Calls that were held or failed so far. */
  readonly hits: number;
}

const WRITE_FLAGS = constants.O_WRONLY | constants.O_RDWR | constants.O_CREAT | constants.O_TRUNC | constants.O_APPEND;

function writes(method: string, args: unknown[]): boolean {
  if (method !== 'open') return ['writeFile', 'rename', 'link', 'unlink', 'rm', 'rmdir', 'mkdir', 'chmod', 'chown'].includes(method);
  const flags = args[1];
  if (flags === undefined) return false;
  if (typeof flags === 'number') return (flags & WRITE_FLAGS) !== 0;
  return String(flags) !== 'r';
}

export function faultyFs(base: FsPort, under: string): FaultyFs {
  let mode: FaultMode = 'pass';
  let hits = 0;
  let wake: Array<() => void> = [];
  const inside = (p: unknown) => typeof p === 'string' && (p === under || p.startsWith(under + sep));
  const fs = new Proxy(base, {
    get(target, prop: string) {
      const real = (target as unknown as Record<string, unknown>)[prop];
      if (typeof real !== 'function') return real;
      return async (...args: unknown[]) => {
        const touches = args.some(inside);
        while (touches && mode === 'hold-writes' && writes(prop, args)) {
          hits += 1;
          await new Promise<void>((r) => wake.push(r));
        }
        if (touches && mode === 'fail') {
          hits += 1;
          throw Object.assign(new Error(`EIO: i/o error, ${prop} '${String(args[0])}'`), { code: 'EIO' });
        }
        return (real as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return {
    fs,
    set(next) {
      mode = next;
      const waiting = wake;
      wake = [];
      for (const w of waiting) w();
    },
    get hits() {
      return hits;
    },
  };
}

/** Holds the first call whose argv matches until `release`; `reached` resolves when it arrives. */
export function holdingRunner(base: CommandRunner, match: (program: string, args: readonly string[]) => boolean) {
  let arrived!: () => void;
  let go!: () => void;
  const reached = new Promise<void>((r) => { arrived = r; });
  const released = new Promise<void>((r) => { go = r; });
  let armed = true;
  const runner: CommandRunner = {
    async run(program: string, args: readonly string[], options?: CommandOptions): Promise<CommandResult> {
      if (armed && match(program, args)) {
        armed = false;
        arrived();
        await released;
      }
      return base.run(program, args, options);
    },
  };
  return { runner, reached, release: () => go() };
}
