import { readFileSync, readlinkSync } from 'node:fs';
import { z } from 'zod';

/**
 * Which process holds a repository lock, precisely enough that a process on the same machine
 * can tell it is gone: the kernel's boot id, the pid namespace, the pid and the process's start
 * time (a pid is reused; a pid and its start time are not), and its user. Host names say none of this: two
 * containers on two hosts often share one, and a pid means nothing in another pid namespace.
 */
export const LockHolderSchema = z.object({
  boot: z.string().max(64),
  pidns: z.string().max(64),
  pid: z.number().int().positive().max(2 ** 22),
  /** Its user: /proc may hide other users' processes (hidepid), so only a same-user holder is judged. */
  uid: z.number().int().nonnegative().max(2 ** 32 - 2),
  /** Field 22 of /proc/<pid>/stat: clock ticks after boot. */
  started: z.string().regex(/^\d{1,20}$/),
});
export type LockHolder = z.infer<typeof LockHolderSchema>;

/** The start time of process `pid` as /proc shows it, or undefined when there is no such process. */
function startTimeOf(pid: number): string | undefined | 'unknown' {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? undefined : 'unknown';
  }
  // The command name (field 2) is in parentheses and may hold spaces and parentheses itself.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return fields[19];
}

let own: LockHolder | null | undefined;

/** This process, or undefined where /proc does not tell (then no lock is ever judged dead). */
export function thisHolder(): LockHolder | undefined {
  if (own === undefined) {
    try {
      // A /proc of another pid namespace (one entered without mounting its own) shows other
      // processes under these pids: nothing read there would be about this process's namespace.
      if (readlinkSync('/proc/self') !== String(process.pid)) throw new Error('/proc is of another pid namespace');
      const started = startTimeOf(process.pid);
      own = started === undefined || started === 'unknown' ? null : {
        boot: readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(),
        pidns: readlinkSync('/proc/self/ns/pid'),
        pid: process.pid,
        uid: process.getuid?.() ?? 0,
        started,
      };
    } catch {
      own = null;
    }
  }
  return own ?? undefined;
}

/**
 * Whether the holder is a process that has certainly ended: it ran since this machine's last
 * boot, in this pid namespace, and no process with its pid and start time exists any more.
 * Anything else (another machine, another namespace, an older lock without a holder, no /proc
 * here) is not known to be dead, and the lock waits for its expiry as before.
 */
export function holderIsGone(holder: LockHolder | undefined): boolean {
  const me = thisHolder();
  if (!holder || !me || holder.boot !== me.boot || holder.pidns !== me.pidns || holder.uid !== me.uid) return false;
  if (holder.pid === me.pid) return holder.started !== me.started;
  const started = startTimeOf(holder.pid);
  return started !== 'unknown' && started !== holder.started;
}
