import { randomBytes } from 'node:crypto';

/** Bytes drawn from the system's generator at a time: a draw costs a system call and a buffer. */
const POOL_BYTES = 4096;
let pool = Buffer.alloc(0);
let offset = 0;

/**
 * `bytes` random bytes as hex, from a pool refilled by `crypto.randomBytes`: unguessable like a
 * direct call, without one call per temp name, lock token and epoch on every request.
 */
export function randomHex(bytes: number): string {
  if (bytes > POOL_BYTES) return randomBytes(bytes).toString('hex');
  if (offset + bytes > pool.length) {
    pool = randomBytes(POOL_BYTES);
    offset = 0;
  }
  const hex = pool.toString('hex', offset, offset + bytes);
  // Never handed out twice.
  pool.fill(0, offset, offset + bytes);
  offset += bytes;
  return hex;
}
