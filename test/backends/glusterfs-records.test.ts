import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../src/core/errors.js';
import type { GlusterVolume } from '../../src/backends/glusterfs/parsers.js';
import { classify, notOurs, RECORD_OPTION, volumeRecordOf } from '../../src/backends/glusterfs/volume-record.js';
import { checkAdoptedLimit, quotaWarning } from '../../src/backends/glusterfs/volume-ownership.js';

const mine = { pool: 'state', id: '11111111-2222-4333-8444-555555555555' };
const theirs = { pool: 'state2', id: '99999999-2222-4333-8444-555555555555' };

function volume(record?: unknown): GlusterVolume {
  return {
    name: 'stowage-db', id: 'aaaaaaaa-2222-4333-8444-555555555555', status: 'Started', started: true, type: 'Distribute',
    brickCount: 1, replicaCount: 1, disperseCount: 0, redundancyCount: 0, bricks: [],
    options: record === undefined ? {} : { [RECORD_OPTION]: typeof record === 'string' ? record : JSON.stringify(record) },
  };
}
const base = { name: 'db', options: {}, createdAt: '2026-01-01T00:00:00Z', createdBy: 'node-a' };

describe('volume mode records (written by any peer of the trusted pool)', () => {
  it('tells this deployment\'s volumes from another deployment\'s, unrecorded and earlier ones', () => {
    expect(classify(undefined, 'db', mine)).toEqual({ kind: 'none' });
    expect(classify(volume(), 'db', mine)).toEqual({ kind: 'unmanaged' });
    expect(classify(volume({ ...base, deployment: mine }), 'db', mine).kind).toBe('ours');
    expect(classify(volume({ ...base, deployment: theirs }), 'db', mine)).toMatchObject({ kind: 'foreign', owner: theirs });
    expect(classify(volume(base), 'db', mine).kind).toBe('unclaimed');
  });

  it('refuses records that are not JSON, describe another volume, or carry malformed deployments or bricks', () => {
    for (const bad of [
      'not json',
      { ...base, name: 'other' },
      { ...base, deployment: { pool: 'state', id: 'not-a-uuid' } },
      { ...base, deployment: { pool: '../etc', id: mine.id } },
      { ...base, deployment: mine, bricks: [{ host: 'gl1', path: 'relative/path', peer: mine.id }] },
      { ...base, deployment: mine, bricks: [{ host: 'gl1', path: '/data/b/x', peer: 'peer' }] },
      { ...base, options: { size: -1 } },
    ]) {
      expect(() => classify(volume(bad), 'db', mine)).toThrow(expect.objectContaining({ code: ErrorCodes.STATE_CORRUPT }));
    }
  });

  it('hands the core only the fields every backend has', () => {
    const stored = { ...base, adopted: true, deployment: mine, bricks: [], sizeEnforced: false };
    expect(volumeRecordOf(stored)).toEqual({ ...base, adopted: true });
  });

  it('names the owner in refusals, and says how to claim an earlier record', () => {
    const foreign = classify(volume({ ...base, deployment: theirs }), 'db', mine);
    expect(notOurs(foreign, 'stowage-db', 'db', mine, 'delete').message)
      .toMatch(/belongs to another stowage deployment \(state pool state2, id 99999999-.*does not delete it/);
    const unclaimed = classify(volume(base), 'db', mine);
    expect(notOurs(unclaimed, 'stowage-db', 'db', mine, 'delete')).toMatchObject({
      message: expect.stringMatching(/records no deployment.*node-a.*claim it by adopting it/),
      remedies: [{ action: 'adopt', volume: 'db' }],
    });
  });

  it('reports sizes that nodes with different glusterfs.quota settings treat differently', () => {
    const recorded = { ...base, options: { size: 10 * 1024 * 1024 }, sizeEnforced: false };
    expect(quotaWarning(recorded, 'stowage-db', true)).toMatch(/size 10MiB is recorded but not enforced.*limit-usage \/ 10485760/);
    expect(quotaWarning(recorded, 'stowage-db', false)).toBeUndefined();
    expect(quotaWarning({ ...recorded, sizeEnforced: true }, 'stowage-db', false)).toMatch(/enforced by a gluster quota.*glusterfs.quota=false/);
    expect(quotaWarning({ ...base, sizeEnforced: false }, 'stowage-db', true)).toBeUndefined();
  });

  it('keeps an existing limit on adopt: the same size or none passes, another size is refused', () => {
    expect(() => checkAdoptedLimit(20, 20, 'stowage-db', 'db')).not.toThrow();
    expect(() => checkAdoptedLimit(20, undefined, 'stowage-db', 'db')).not.toThrow();
    expect(() => checkAdoptedLimit(undefined, 10, 'stowage-db', 'db')).not.toThrow();
    expect(() => checkAdoptedLimit(20 * 1024 * 1024, 10, 'stowage-db', 'db')).toThrow(expect.objectContaining({
      code: ErrorCodes.DATA_CONFLICT, message: expect.stringMatching(/already has a limit of 20MiB on \//),
    }));
  });
});
