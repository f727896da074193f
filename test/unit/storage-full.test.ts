import { describe, expect, it } from 'vitest';
import { ErrorCodes, asStorageFull, isStorageFull } from '../../src/core/errors.js';
import { isFull } from '../../src/backup-targets/vfs/space-reserve.js';

/** What Node 20 throws for EDQUOT (errno 122, which libuv has no name for), here from close(2) on a gluster mount. */
function node20Edquot(): Error {
  return Object.assign(new Error('Unknown system error -122: Unknown system error -122, close'),
    { errno: -122, code: 'Unknown system error -122', syscall: 'close' });
}

describe('a full storage or quota', () => {
  it('is recognised by errno when Node has no code name for EDQUOT, and explained in words', () => {
    const err = node20Edquot();
    expect(isStorageFull(err)).toBe(true);
    expect(isFull(err)).toBe(true);
    const full = asStorageFull(err, 'volume v', 'free some space') as { code?: string; message: string };
    expect(full.code).toBe(ErrorCodes.STORAGE_FULL);
    expect(full.message).toBe('volume v is full: disk quota exceeded (EDQUOT); free some space');
  });

  it('is recognised by code (ENOSPC, EDQUOT) and by ENOSPC\'s errno; other errors pass unchanged', () => {
    expect(isStorageFull(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28 }))).toBe(true);
    expect(isStorageFull(Object.assign(new Error('x'), { code: 'EDQUOT' }))).toBe(true);
    expect(isStorageFull(Object.assign(new Error('x'), { errno: -28 }))).toBe(true);
    const other = Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO', errno: -5 });
    expect(isStorageFull(other)).toBe(false);
    expect(asStorageFull(other, 'volume v', 'then')).toBe(other);
  });
});
