import { setFlagsFromString } from 'node:v8';

let processFlags: string | undefined;

/** Sets V8 flags for the whole process, remembered so that they can be set again (see reassertV8Flags). */
export function setProcessV8Flags(flags: string): void {
  processFlags = flags;
  setFlagsFromString(flags);
}

/**
 * Sets again the flags setProcessV8Flags set, if any. V8's flags are process-wide, and V8
 * writes some of them as it configures a new isolate's heap: once a worker thread had started,
 * the daemon's `--semi-space-growth-factor=1` no longer held for the main thread, whose young
 * generation grew to 16 MiB per semi-space for the rest of the process's life (a backup's peak
 * RSS 150-161 MiB against 105-120 MiB; a loop allocating garbage 56-59 MiB of heap against 21).
 * Call it once each worker is online (its isolate made).
 */
export function reassertV8Flags(): void {
  if (processFlags !== undefined) setFlagsFromString(processFlags);
}
