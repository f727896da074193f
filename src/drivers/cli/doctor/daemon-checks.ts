import { errnoCode, messageOf } from '../../../core/errors.js';
import { fail, ok, skip, warn, type CheckResult, type DoctorContext } from './check.js';
import { storePlanOf } from './store-plan.js';

/** The daemon on the control socket: running, and with the settings doctor was given. */
export function daemonCheck(ctx: DoctorContext): CheckResult {
  const { settings, daemon } = ctx;
  if (!daemon) {
    return fail('daemon', `no stowage daemon answers on ${settings.socket}${ctx.daemonProblem ? ` (${ctx.daemonProblem})` : ''}`,
      'start it (systemctl start stowage, docker plugin enable, or stowage daemon with these options); ' +
      'if it runs on another socket, give doctor the same --socket');
  }
  const node = String(daemon.info.node ?? '');
  const backend = String(daemon.info.backend ?? '');
  const differs: string[] = [];
  if (node !== settings.nodeId) differs.push(`node ${node}, not ${settings.nodeId}`);
  if (backend !== settings.backend) differs.push(`backend ${backend}, not ${settings.backend}`);
  // Where the store is, as the daemon reports it and as doctor's options (or their defaults)
  // put it: a doctor run without the daemon's variables would look at another store. Only
  // these, which the backends report as given; others they report normalised (sizes, lists).
  if (backend === settings.backend) {
    const plan = storePlanOf(settings);
    const planned: Record<string, string> = plan.backend === 'vfs' ? { 'vfs.path': plan.storePath }
      : plan.backend === 'glusterfs' ? { 'glusterfs.mode': plan.options.mode, 'glusterfs.pool': plan.options.pool } : {};
    for (const [key, value] of Object.entries(planned)) {
      const running = daemon.info[key];
      if (typeof running === 'string' && running !== value) differs.push(`${key}=${running}, not ${value}`);
    }
  }
  if (differs.length > 0) {
    return warn('daemon', `the daemon on ${settings.socket} runs with ${differs.join(' and ')}: these checks look at a different set-up`,
      'run doctor with the daemon\'s options (the same flags or STOWAGE_* variables)');
  }
  return ok('daemon', `the daemon on ${settings.socket} answers (node ${node}, backend ${backend}, scope ${String(daemon.info.scope)})`);
}

/**
 * The socket serves the control API as well as the plugin protocol: anyone who can connect can
 * delete volumes, so it must be root's alone (the daemon makes it 0600).
 */
export async function socketCheck(ctx: DoctorContext): Promise<CheckResult> {
  const { socket } = ctx.settings;
  let st;
  try {
    st = await ctx.fs.lstat(socket);
  } catch (err) {
    return errnoCode(err) === 'ENOENT'
      ? skip('socket', `${socket} does not exist (no daemon listens there)`)
      : fail('socket', `cannot look at ${socket}: ${messageOf(err)}`, 'run doctor as root, as the daemon runs');
  }
  if (!st.isSocket()) {
    return fail('socket', `${socket} is not a socket`, `move it aside; the daemon makes the socket itself`);
  }
  const mode = st.mode & 0o777;
  const modeText = mode.toString(8).padStart(4, '0');
  if ((mode & 0o077) !== 0) {
    return fail('socket', `${socket} has mode ${modeText}: other local users can create, mount and delete volumes through it`,
      `chmod 600 ${socket} (the daemon makes it 0600; whoever changed it may do so again)`);
  }
  if (st.uid !== 0 && st.uid !== process.getuid?.()) {
    return warn('socket', `${socket} belongs to uid ${st.uid}, not root`, `chown root:root ${socket}`);
  }
  return ok('socket', `${socket} has mode ${modeText}, owner uid ${st.uid}`);
}
