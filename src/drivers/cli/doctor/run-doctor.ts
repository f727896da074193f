import * as fsp from 'node:fs/promises';
import { ExecaCommandRunner, type CommandRunner } from '../../../core/command-runner.js';
import type { FsPort } from '../../../core/fs-port.js';
import { controlEndpoints as api } from '../../control/endpoints.js';
import { ControlError, callDaemon } from '../client.js';
import type { DaemonSettings } from '../daemon.js';
import { fail, ok, type CheckResult, type DaemonState, type DoctorContext } from './check.js';
import { clusterChecks, sharingCheck } from './cluster-checks.js';
import { daemonCheck, socketCheck } from './daemon-checks.js';
import { engineChecks } from './engine-checks.js';
import { mountRecordsCheck } from './mount-checks.js';
import { glusterChecks, spaceChecks, thinPoolCheck } from './storage-checks.js';
import { storeCheck } from './store-check.js';
import { storePlanOf } from './store-plan.js';

const DAEMON_CALL_MS = 10_000;

/** Asks the daemon on the control socket, when one answers; read-only calls only. */
async function askDaemon(socket: string): Promise<{ daemon?: DaemonState; problem?: string }> {
  try {
    const info = await callDaemon(socket, api.info, {}, { timeoutMs: DAEMON_CALL_MS });
    const [nodes, mounts, list] = await Promise.all([
      callDaemon(socket, api.nodes, {}, { timeoutMs: DAEMON_CALL_MS }).catch(() => undefined),
      callDaemon(socket, api.mounts, {}, { timeoutMs: DAEMON_CALL_MS }),
      callDaemon(socket, api.list, {}, { timeoutMs: DAEMON_CALL_MS }).catch(() => undefined),
    ]);
    return {
      daemon: {
        info,
        // Without cluster state (devicemapper) the daemon answers an empty list: nothing to show.
        nodes: nodes && !String(info.cluster ?? '').startsWith('off') ? { nodes: nodes.nodes, invalid: nodes.invalid ?? [] } : undefined,
        mounts: mounts.mounts,
        volumes: list?.volumes.map((v) => v.name),
      },
    };
  } catch (err) {
    if (err instanceof ControlError && err.kind === 'unreachable') return { problem: undefined };
    return { problem: err instanceof Error ? err.message : String(err) };
  }
}

export interface DoctorPorts {
  runner?: CommandRunner;
  fs?: FsPort;
  now?: () => number;
}

/** Every check, in the order they are printed. Reads only: nothing is written or repaired. */
export async function runDoctor(settings: DaemonSettings, ports: DoctorPorts = {}): Promise<CheckResult[]> {
  const asked = await askDaemon(settings.socket);
  const ctx: DoctorContext = {
    settings,
    fs: ports.fs ?? (fsp as FsPort),
    runner: ports.runner ?? new ExecaCommandRunner(),
    daemon: asked.daemon,
    daemonProblem: asked.problem,
    now: ports.now ?? Date.now,
  };
  const plan = storePlanOf(settings);
  const results: CheckResult[] = [daemonCheck(ctx), await socketCheck(ctx)];
  results.push(plan.backend === 'invalid'
    ? fail('settings', `the backend settings are not valid: ${plan.problem}`, 'fix the daemon\'s --backend and --opt (or STOWAGE_BACKEND, STOWAGE_OPTS)')
    : ok('settings', `backend ${plan.backend}, root ${settings.root}, node ${settings.nodeId}`));
  results.push(...await engineChecks(ctx));
  const store = await storeCheck(ctx, plan);
  if (store) results.push(store.result);
  results.push(await sharingCheck(ctx, plan, store?.absent));
  results.push(...await clusterChecks(ctx, plan));
  results.push(...await glusterChecks(ctx, plan));
  results.push(...await thinPoolCheck(ctx, plan));
  results.push(...await spaceChecks(ctx, plan, store?.absent));
  results.push(await mountRecordsCheck(ctx));
  return results;
}
