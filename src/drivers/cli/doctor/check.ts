import type { CommandRunner } from '../../../core/command-runner.js';
import type { InvalidNodeRecord, NodeView } from '../../../core/cluster/node-record.js';
import type { FsPort } from '../../../core/fs-port.js';
import type { MountRecordView } from '../../../core/mount-table.js';
import type { DaemonSettings } from '../daemon.js';

/**
 * `ok`: as it should be. `warn`: worth a look, nothing is broken yet. `fail`: needs action now
 * (the exit status says so). `skip`: does not apply to this set-up, or cannot be asked.
 */
export type CheckStatus = 'ok' | 'warn' | 'fail' | 'skip';

export interface CheckResult {
  /** Short, stable name: `engine`, `socket`, `free-space`, ... */
  check: string;
  status: CheckStatus;
  /** What was found. */
  message: string;
  /** What to do about it; present on every warn and fail. */
  advice?: string;
}

/** What a running daemon told over its control socket; undefined when none answered. */
export interface DaemonState {
  info: Record<string, unknown>;
  nodes?: { nodes: NodeView[]; invalid: InvalidNodeRecord[] };
  mounts: MountRecordView[];
  volumes?: string[];
}

export interface DoctorContext {
  settings: DaemonSettings;
  /** Read-only use only: doctor never writes or repairs. */
  fs: FsPort;
  runner: CommandRunner;
  daemon?: DaemonState;
  /** Why no daemon answered, when none did. */
  daemonProblem?: string;
  now(): number;
}

export const ok = (check: string, message: string): CheckResult => ({ check, status: 'ok', message });
export const skip = (check: string, message: string): CheckResult => ({ check, status: 'skip', message });
export const warn = (check: string, message: string, advice: string): CheckResult => ({ check, status: 'warn', message, advice });
export const fail = (check: string, message: string, advice: string): CheckResult => ({ check, status: 'fail', message, advice });

/** 1 when any check failed (with `strict`, also when one warned), else 0. */
export function exitStatusOf(results: readonly CheckResult[], strict = false): number {
  return results.some((r) => r.status === 'fail' || (strict && r.status === 'warn')) ? 1 : 0;
}

export const seconds = (ms: number): string => `${Math.round(ms / 1000)} s`;
