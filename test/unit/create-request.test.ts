import { describe, expect, it } from 'vitest';
import { createRequest } from '../../src/core/create-request.js';
import { LockLease } from '../../src/core/cluster/lease.js';
import { parseVolumeOptions } from '../../src/core/options.js';

describe('createRequest', () => {
  const origin = { createdAt: '2026-01-01T00:00:00.000Z', createdBy: 'node-a' };

  it('keeps adopt out of the record and passes it as the instruction', () => {
    const request = createRequest('db', parseVolumeOptions({ size: '1M', adopt: 'true', mode: '750' }), origin);
    expect(request).toEqual({
      record: { name: 'db', options: { size: 1048576, mode: 0o750 }, ...origin },
      adopt: true,
    });
  });

  it('carries the lease only when there is one', () => {
    const lease = new LockLease('db', 60_000, 10_000, LockLease.stamp());
    expect(createRequest('db', {}, origin, lease).lease).toBe(lease);
    expect('lease' in createRequest('db', {}, origin)).toBe(false);
    expect(createRequest('db', {}, origin).adopt).toBe(false);
  });
});
