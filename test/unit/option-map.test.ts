import { describe, expect, it } from 'vitest';
import { parseDevicemapperOptions } from '../../src/backends/devicemapper/dm-options.js';
import { parseGlusterfsOptions } from '../../src/backends/glusterfs/glusterfs-options.js';
import { parseVfsOptions } from '../../src/backends/vfs/vfs-options.js';
import { ErrorCodes } from '../../src/core/errors.js';
import { parseVolumeOptions } from '../../src/core/options.js';

const pool = { 'glusterfs.pool': 'p' };
const volumeMode = { 'glusterfs.mode': 'volume', 'glusterfs.pool': 'state', 'glusterfs.bricks': 'gl1:/data/b' };

/** Every option map of the project, each fed a raw map that a JavaScript caller may pass. */
const maps: Array<[string, string, (raw: Record<string, unknown>) => unknown]> = [
  ['volume', 'size', (raw) => parseVolumeOptions(raw)],
  ['vfs', 'vfs.path', (raw) => parseVfsOptions(raw as Record<string, string>, '/state')],
  ['glusterfs', 'glusterfs.mode', (raw) => parseGlusterfsOptions({ ...pool, ...raw } as Record<string, string>)],
  ['devicemapper', 'dm.fs', (raw) => parseDevicemapperOptions(raw as Record<string, string>)],
];

function refusal(parse: () => unknown): string {
  try {
    parse();
  } catch (err) {
    expect(err).toMatchObject({ code: ErrorCodes.INVALID_OPTION });
    return (err as Error).message;
  }
  throw new Error('expected the options to be refused');
}

describe('option maps: one way to declare them', () => {
  it.each(maps)('%s: an unknown key is named with the known ones, before any value is judged', (what, key, parse) => {
    const message = refusal(() => parse({ [key]: 'not valid here', typo: 'x' }));
    expect(message).toMatch(new RegExp(`^unknown ${what} option "typo"; known options: `));
  });

  it.each(maps)('%s: a value that is a map or a list is refused with the key named', (_what, key, parse) => {
    expect(refusal(() => parse({ [key]: { a: 1 } }))).toBe(`option ${key}: the value must be a string`);
    expect(refusal(() => parse({ [key]: ['x'] }))).toBe(`option ${key}: the value must be a string`);
  });

  it('takes numbers and booleans from JavaScript callers as their text', () => {
    expect(parseVolumeOptions({ uid: 1000, adopt: true })).toEqual({ uid: 1000, adopt: true });
    expect(parseVfsOptions({ 'vfs.shared': false } as unknown as Record<string, string>, '/state').shared).toBe(false);
    expect(parseGlusterfsOptions({ ...pool, 'glusterfs.timeout': 30 } as unknown as Record<string, string>).timeoutMs).toBe(30_000);
  });
});

describe('option maps: one boolean rule, exactly true or false', () => {
  it('accepts true and false everywhere', () => {
    expect(parseVolumeOptions({ adopt: 'true' }).adopt).toBe(true);
    expect(parseVolumeOptions({ adopt: 'false' }).adopt).toBe(false);
    expect(parseVfsOptions({ 'vfs.shared': 'true' }, '/state').shared).toBe(true);
    expect(parseVfsOptions({ 'vfs.shared': 'false' }, '/state').shared).toBe(false);
    expect(parseVfsOptions({ 'vfs.shared': 'auto' }, '/state').shared).toBe('auto');
    expect(parseGlusterfsOptions({ ...pool, 'glusterfs.quota': 'false' }).quota).toBe(false);
    expect(parseGlusterfsOptions({ ...volumeMode, 'glusterfs.brickforce': 'true' }).brickForce).toBe(true);
  });

  it.each(['yes', '1', 'no', '0', 'TRUE', 'True', ''])('refuses %j in core and backend maps alike, naming the key', (value) => {
    expect(refusal(() => parseVolumeOptions({ adopt: value }))).toBe(`option adopt=${JSON.stringify(value)}: expected true or false`);
    expect(refusal(() => parseGlusterfsOptions({ ...pool, 'glusterfs.quota': value })))
      .toBe(`glusterfs.quota=${JSON.stringify(value)}: expected true or false`);
    expect(refusal(() => parseGlusterfsOptions({ ...volumeMode, 'glusterfs.brickforce': value })))
      .toBe(`glusterfs.brickforce=${JSON.stringify(value)}: expected true or false`);
    expect(refusal(() => parseVfsOptions({ 'vfs.shared': value }, '/state')))
      .toBe(`vfs.shared=${JSON.stringify(value)}: expected auto, true or false`);
  });
});

describe('vfs options', () => {
  it('defaults the store under the root and resolves a given path', () => {
    expect(parseVfsOptions({}, '/state')).toEqual({ path: '/state/volumes', shared: 'auto' });
    expect(parseVfsOptions({ 'vfs.path': '/mnt/nfs/./volumes/' }, '/state').path).toBe('/mnt/nfs/volumes');
  });

  it('refuses a relative store path', () => {
    expect(refusal(() => parseVfsOptions({ 'vfs.path': 'volumes' }, '/state'))).toBe('vfs.path="volumes" must be an absolute path');
  });
});
