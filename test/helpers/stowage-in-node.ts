/**
 * Runs a stowage daemon inside a Docker node's mount namespace, on the default socket path
 * (/run/docker/plugins/stowage.sock there), so the node's engine discovers it as Docker would.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CLI_PATH, canConnect } from './daemon-process.js';
import type { DockerNode, NamespaceProcess } from './docker-node.js';

export interface StowageInNode {
  /** Host path of the daemon's socket. */
  socket: string;
  root: string;
  logFile: string;
  /** Sends the signal and waits for the process to end. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  log(): Promise<string>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function startStowageInNode(
  node: DockerNode,
  opts: {
    root?: string;
    args?: string[];
    logName?: string;
    /** Program and arguments to run the daemon under, e.g. ['faketime', '-f', '+3h']. */
    wrapper?: string[];
    env?: Record<string, string>;
  } = {},
): Promise<StowageInNode> {
  const root = opts.root ?? join(node.dir, 'stowage-root');
  const socket = join(node.pluginsDir, 'stowage.sock');
  const logFile = join(node.dir, `${opts.logName ?? 'stowage'}.log`);
  const child: NamespaceProcess = node.spawnInNamespace(
    [...(opts.wrapper ?? []), process.execPath, CLI_PATH, 'daemon', '--root', root, ...(opts.args ?? [])],
    { logFile, env: opts.env });
  let ended = false;
  void child.then(() => { ended = true; });
  const log = () => readFile(logFile, 'utf8').catch(() => '');
  const deadline = Date.now() + 20_000;
  while (!(await canConnect(socket))) {
    if (ended || Date.now() > deadline) {
      child.kill('SIGKILL');
      await child;
      throw new Error(`stowage daemon in node ${node.name} did not start:\n${await log()}`);
    }
    await sleep(50);
  }
  return {
    socket, root, logFile, log,
    stop: async (signal = 'SIGTERM') => {
      if (!ended) child.kill(signal);
      await child;
    },
  };
}
