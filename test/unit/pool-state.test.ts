import { describe, expect, it } from 'vitest';
import { loadState, saveState } from '../../src/backends/devicemapper/pool-state.js';
import { ErrorCodes } from '../../src/core/errors.js';
import { memFs } from '../helpers/memfs-stack.js';

const PATH = '/state/devicemapper/pool.json';

/** A pool state as the first devicemapper version wrote it: no nextThinId, no createdInTx, a pending change without claims. */
function legacyState(): Record<string, unknown> & { volumes: Record<string, Record<string, unknown>>; retained: Array<Record<string, unknown>> } {
  const snapshot = { name: 'monday', thinId: 2, createdAt: '2026-01-02T00:00:00.000Z' };
  return {
    format: 1, writtenBy: 'node-a', writtenAt: '2026-01-03T00:00:00.000Z',
    pool: { name: 'pool', dataDevice: '/pool/data.img', metadataDevice: '/pool/meta.img', blockSectors: 128, createdByStowage: true, createdAt: '2026-01-01T00:00:00.000Z' },
    transactionId: 7, foreignIds: [9],
    pending: { op: 'delete', thinId: 3, fromTx: 6, toTx: 7 },
    volumes: {
      a: {
        record: { name: 'a', options: { size: 2 ** 26, uid: 1000 }, createdAt: '2026-01-01T00:00:00.000Z', createdBy: 'node-a' },
        thinId: 1, sectors: 131072, fs: 'ext4', ready: true, mounted: false, prepared: true, snapshots: [snapshot],
      },
    },
    retained: [{ name: 'old', removedAt: '2026-01-02T00:00:00.000Z', thinId: 4, sectors: 131072, fs: 'xfs', path: '/state/devicemapper/retained/old', snapshots: [] }],
  };
}

async function load(state: unknown) {
  const fs = memFs();
  await fs.mkdir('/state/devicemapper', { recursive: true });
  await fs.writeFile(PATH, typeof state === 'string' ? state : JSON.stringify(state));
  return { fs, loaded: () => loadState(fs, PATH) };
}

async function refusal(state: unknown): Promise<string> {
  const err = await (await load(state)).loaded().catch((e: unknown) => e);
  expect(err).toMatchObject({ code: ErrorCodes.STATE_CORRUPT });
  const message = (err as Error).message;
  expect(message).toMatch(new RegExp(`^devicemapper pool state ${PATH} .*; restore it from a backup or move it aside and adopt the pool again$`));
  return message;
}

describe('devicemapper pool state file', () => {
  it('loads state written before thin id claims and the id high-water mark', async () => {
    expect(await (await load(legacyState())).loaded()).toEqual(legacyState());
  });

  it('is absent when the file is', async () => {
    expect(await loadState(memFs(), PATH)).toBeUndefined();
  });

  it('keeps fields it does not know through a load and a save, for the version that wrote them', async () => {
    const written = { ...legacyState(), laterField: { kept: true } };
    written.volumes.a!.laterVolumeField = 1;
    const { fs, loaded } = await load(written);
    const state = await loaded();
    await saveState(fs, PATH, state!, 'node-b');
    const saved = JSON.parse(String(await fs.readFile(PATH, 'utf8'))) as { laterField: unknown; writtenBy: string; volumes: Record<string, Record<string, unknown>> };
    expect(saved.laterField).toEqual({ kept: true });
    expect(saved.volumes.a!.laterVolumeField).toBe(1);
    expect(saved.writtenBy).toBe('node-b');
  });

  it.each([
    ['another format', (s: ReturnType<typeof legacyState>) => { s.format = 2; }, /is not in the expected format \(.* at format\)/],
    ['a fractional transaction id', (s: ReturnType<typeof legacyState>) => { s.transactionId = 1.5; }, /is not in the expected format \(.* at transactionId\)/],
    ['a pool without a block size', (s: ReturnType<typeof legacyState>) => { delete (s.pool as Record<string, unknown>).blockSectors; }, /is not in the expected format \(.* at pool\.blockSectors\)/],
    ['a non-numeric foreign id', (s: ReturnType<typeof legacyState>) => { s.foreignIds = ['9']; }, /is not in the expected format \(.* at foreignIds\.0\)/],
    ['an unsafe nextThinId', (s: ReturnType<typeof legacyState>) => { s.nextThinId = 2 ** 60; }, /has a malformed nextThinId/],
    ['a volume on an unknown filesystem', (s: ReturnType<typeof legacyState>) => { s.volumes.a!.fs = 'btrfs'; }, /has a malformed entry for volume a \(.* at volumes\.a\.fs\)/],
    ['a volume whose ready flag is text', (s: ReturnType<typeof legacyState>) => { s.volumes.a!.ready = 'yes'; }, /has a malformed entry for volume a \(.* at volumes\.a\.ready\)/],
    ['a volume with a negative owner', (s: ReturnType<typeof legacyState>) => { (s.volumes.a!.record as { options: { uid: number } }).options.uid = -1; },
      /has a malformed entry for volume a \(.* at volumes\.a\.record\.options\.uid\)/],
    ['a volume filed under another name', (s: ReturnType<typeof legacyState>) => { s.volumes.b = s.volumes.a!; delete s.volumes.a; },
      /has a malformed entry for volume b \(its record names a\)/],
    ['a snapshot without a thin id', (s: ReturnType<typeof legacyState>) => { s.volumes.a!.snapshots = [{ name: 'x' }]; }, /has a malformed entry for volume a/],
    ['a retained entry without a path', (s: ReturnType<typeof legacyState>) => { delete s.retained[0]!.path; }, /has a malformed retained entry \(.* at retained\.0\.path\)/],
    ['a pending change of an unknown kind', (s: ReturnType<typeof legacyState>) => { s.pending = { op: 'resize', thinId: 3 }; }, /has a malformed pending change \(.* at pending\.op\)/],
  ])('refuses %s, naming the part', async (_what, spoil, message) => {
    const state = legacyState();
    spoil(state);
    expect(await refusal(state)).toMatch(message);
  });

  it('refuses a file that is not JSON', async () => {
    expect(await refusal('{"format": 1,')).toMatch(/cannot be read/);
  });
});
