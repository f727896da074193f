import { errnoCode } from './errors.js';

/**
 * Whether a process with this pid exists in our PID namespace (EPERM: it exists, owned by
 * another user). Only a hint: a pid may be reused, so never the sole proof that a holder is live.
 */
export function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errnoCode(err) === 'EPERM';
  }
}
