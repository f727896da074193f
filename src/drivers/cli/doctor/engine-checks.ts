import { basename, dirname } from 'node:path';
import { z } from 'zod';
import { messageOf } from '../../../core/errors.js';
import { silentLogger } from '../../../core/logger.js';
import { DockerEngine } from '../../docker-engine/docker-engine.js';
import { fail, ok, skip, warn, type CheckResult, type DoctorContext } from './check.js';

const engineInfoSchema = z.object({
  ServerVersion: z.string().optional(),
  Plugins: z.object({ Volume: z.array(z.string()).nullish() }).loose().optional(),
  Swarm: z.object({ LocalNodeState: z.string().optional() }).loose().optional(),
}).loose();

const pluginsSchema = z.array(z.object({ Name: z.string(), Enabled: z.boolean().optional() }).loose());

/** Where a legacy plugin's socket must be for the engine to find it by name. */
const LEGACY_SOCKET_DIR = '/run/docker/plugins';
const SPEC_DIRS = ['/etc/docker/plugins', '/usr/lib/docker/plugins'];

export function driverNameOf(ctx: DoctorContext): string {
  return ctx.settings.driverName ?? basename(ctx.settings.socket).replace(/\.sock$/, '');
}

export function engineOf(ctx: DoctorContext): DockerEngine | undefined {
  const socket = ctx.settings.dockerSocket;
  return socket === undefined ? undefined : new DockerEngine(socket, driverNameOf(ctx), silentLogger);
}

/**
 * The local engine: reachable, and the driver visible to it (a managed plugin enabled, a
 * legacy plugin activated, or at least discoverable) and to Swarm on a Swarm node.
 */
export async function engineChecks(ctx: DoctorContext): Promise<CheckResult[]> {
  const engine = engineOf(ctx);
  const driver = driverNameOf(ctx);
  if (!engine) {
    return [
      warn('engine', 'no Docker engine is configured (--docker-host none, or no /var/run/docker.sock)',
        'without it stowage cannot tell which containers use a volume: leaked mount records stay and removals ' +
        'cannot see stopped containers. Point --docker-host (STOWAGE_DOCKER_HOST) at unix:///var/run/docker.sock'),
      skip('driver', 'no Docker engine to ask'),
      skip('swarm', 'no Docker engine to ask'),
    ];
  }
  let info: z.infer<typeof engineInfoSchema>;
  try {
    info = engineInfoSchema.parse(await engine.getJson('/info'));
  } catch (err) {
    return [
      fail('engine', `the Docker engine at ${engine.socket} does not answer: ${messageOf(err)}`,
        'start the engine (systemctl start docker), or point --docker-host (STOWAGE_DOCKER_HOST) at the socket it listens on'),
      skip('driver', 'the Docker engine does not answer'),
      skip('swarm', 'the Docker engine does not answer'),
    ];
  }
  const results = [ok('engine', `the Docker engine at ${engine.socket} answers (version ${info.ServerVersion ?? 'unknown'})`)];
  const volumeDrivers = info.Plugins?.Volume ?? [];
  const managed = pluginsSchema.safeParse(await engine.getJson('/plugins').catch(() => []));
  const plugin = managed.success ? managed.data.find((p) => p.Name === driver || p.Name === `${driver}:latest`) : undefined;
  if (plugin) {
    results.push(plugin.Enabled
      ? ok('driver', `managed plugin ${plugin.Name} is installed and enabled`)
      : fail('driver', `managed plugin ${plugin.Name} is installed but disabled: volumes of driver ${driver} cannot be used`,
        `docker plugin enable ${plugin.Name}`));
  } else if (volumeDrivers.includes(driver)) {
    results.push(ok('driver', `the engine has activated volume driver ${driver}`));
  } else {
    const atDefault = dirname(ctx.settings.socket) === LEGACY_SOCKET_DIR && basename(ctx.settings.socket) === `${driver}.sock`;
    const spec = await firstExisting(ctx, SPEC_DIRS.map((dir) => `${dir}/${driver}.spec`));
    if (!atDefault && !spec) {
      results.push(fail('driver',
        `the engine cannot find volume driver ${driver}: no managed plugin of that name, no socket ${LEGACY_SOCKET_DIR}/${driver}.sock ` +
        `(the daemon listens on ${ctx.settings.socket}) and no ${driver}.spec`,
        `run the daemon on the default socket ${LEGACY_SOCKET_DIR}/${driver}.sock, or write unix://${ctx.settings.socket} ` +
        `into /etc/docker/plugins/${driver}.spec; a managed plugin: pass its name with --driver-name`));
    } else {
      results.push(warn('driver',
        `the engine has not activated volume driver ${driver} yet (found through ${spec ?? ctx.settings.socket}); ` +
        'Swarm does not count the plugin until it has',
        'the daemon has the engine activate it at start and after engine restarts; if the daemon runs, "docker volume ls" ' +
        'activates it now'));
    }
  }
  const swarmState = info.Swarm?.LocalNodeState ?? 'inactive';
  if (swarmState !== 'active') {
    results.push(skip('swarm', `not a Swarm node (${swarmState})`));
  } else if (volumeDrivers.includes(driver) || (plugin?.Enabled === true && volumeDrivers.includes(plugin.Name))) {
    results.push(ok('swarm', `Swarm sees volume driver ${plugin?.Name ?? driver} on this node`));
  } else {
    results.push(fail('swarm',
      `this is a Swarm node but the engine does not report volume driver ${driver} (it reports ${volumeDrivers.join(', ') || 'none'}): ` +
      `services with volume-driver=${driver} stay Pending ("missing plugin") on it`,
      plugin ? `docker plugin enable ${plugin.Name}` : 'make sure the stowage daemon runs, then "docker volume ls" has the engine activate the plugin'));
  }
  return results;
}

async function firstExisting(ctx: DoctorContext, paths: string[]): Promise<string | undefined> {
  for (const path of paths) {
    if (await ctx.fs.stat(path).then(() => true, () => false)) return path;
  }
  return undefined;
}
