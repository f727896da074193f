import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../src/core/errors.js';
import type { CreateResult } from '../../src/core/volume-types.js';
import { ControlError } from '../../src/drivers/cli/client.js';
import { createUnnamed, generatedVolumeName, unusedVolumeName } from '../../src/drivers/cli/unnamed-volume.js';
import { validateVolumeName } from '../../src/core/names.js';

const made = (name: string, created: boolean): CreateResult => ({ created, volume: { name, driver: 'stowage', mountCount: 0, status: {} } as unknown as CreateResult['volume'] });
const names = (...list: string[]) => () => list.shift() ?? 'volume-ffffffff';

describe('a volume created without a name', () => {
  it('gets volume- and 8 hex digits, a valid volume name, different each time', () => {
    const a = generatedVolumeName();
    expect(a).toMatch(/^volume-[0-9a-f]{8}$/);
    expect(() => validateVolumeName(a)).not.toThrow();
    expect(new Set(Array.from({ length: 50 }, generatedVolumeName)).size).toBe(50);
  });

  it('never answers a name that was taken: an existing volume with the same options or different ones moves on to the next name', async () => {
    const asked: string[] = [];
    const existing = new Set(['volume-00000001', 'volume-00000002']);
    const create = async (name: string) => {
      asked.push(name);
      if (name === 'volume-00000002') throw new ControlError('volume volume-00000002 already exists with different options', 'refused', ErrorCodes.VOLUME_EXISTS);
      return made(name, !existing.has(name));
    };
    const got = await createUnnamed(create, names('volume-00000001', 'volume-00000002', 'volume-00000003'));
    expect(got.name).toBe('volume-00000003');
    expect(got.result.created).toBe(true);
    expect(asked).toEqual(['volume-00000001', 'volume-00000002', 'volume-00000003']);
  });

  it('passes on any other failure at once (a bad option), and gives up after five taken names', async () => {
    let calls = 0;
    const badOption = new ControlError('unknown option "sise"', 'refused', ErrorCodes.INVALID_OPTION);
    await expect(createUnnamed(async () => { calls += 1; throw badOption; })).rejects.toBe(badOption);
    expect(calls).toBe(1);
    await expect(createUnnamed(async (name) => made(name, false))).rejects.toThrow(/no unused volume name in 5 tries/);
  });

  it('for a restore, picks a name no volume has', async () => {
    const taken = new Set(['volume-0000000a']);
    expect(await unusedVolumeName(async (n) => taken.has(n), names('volume-0000000a', 'volume-0000000b'))).toBe('volume-0000000b');
    await expect(unusedVolumeName(async () => true)).rejects.toThrow(/give the volume a name/);
  });
});
