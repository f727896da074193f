import { describe, expect, it } from 'vitest';
import { formatSize, parseKeyValuePairs, parseSize, parseVolumeOptions, sameDefiningOptions } from '../../src/core/options.js';

describe('volume options', () => {
  it.each([
    ['512', 512], ['1k', 1024], ['50M', 50 * 2 ** 20], ['50MiB', 50 * 2 ** 20], ['1.5G', 1.5 * 2 ** 30],
    ['2gb', 2 * 2 ** 30], ['1T', 2 ** 40], [' 10G\t', 10 * 2 ** 30], ['1Gi', 2 ** 30], ['512Mi', 512 * 2 ** 20], ['7P', 7 * 2 ** 50],
  ])('parses size %s', (text, bytes) => {
    expect(parseSize(text)).toBe(bytes);
  });

  it.each(['', 'abc', '-1', '0', '10X', '1e9', '9999999P', '8P', '1.9', '10\u00a0G', '\u2028 5G', '5G\u3000'])('rejects size %j', (text) => {
    expect(() => parseSize(text)).toThrow(/size/);
  });

  it('formats sizes in the largest exact binary unit', () => {
    expect(formatSize(50 * 2 ** 20)).toBe('50MiB');
    expect(formatSize(1536)).toBe('1536B');
    expect(formatSize(2 ** 30)).toBe('1GiB');
    expect(formatSize(1000)).toBe('1000B');
  });

  it('parses Docker Opts into typed options', () => {
    expect(parseVolumeOptions({ size: '10G', uid: '1000', gid: '0', mode: '0750', adopt: 'true' }))
      .toEqual({ size: 10 * 2 ** 30, uid: 1000, gid: 0, mode: 0o750, adopt: true });
    expect(parseVolumeOptions(undefined)).toEqual({});
    expect(parseVolumeOptions({ mode: '755' }).mode).toBe(0o755);
  });

  it('rejects unknown keys, bad values and non-maps with the offending key named', () => {
    expect(() => parseVolumeOptions({ sise: '1G' })).toThrow(/unknown volume option "sise"/);
    expect(() => parseVolumeOptions({ uid: '-1' })).toThrow(/uid/);
    expect(() => parseVolumeOptions({ uid: '4294967295' })).toThrow(/uid/);
    expect(() => parseVolumeOptions({ mode: '999' })).toThrow(/mode/);
    expect(() => parseVolumeOptions({ mode: '7' })).toThrow(/mode/);
    expect(() => parseVolumeOptions({ adopt: 'perhaps' })).toThrow(/adopt/);
    expect(() => parseVolumeOptions({ size: { nested: 1 } })).toThrow(/must be a string/);
    expect(() => parseVolumeOptions(['size=1G'])).toThrow(/map/);
    expect(() => parseVolumeOptions('size=1G')).toThrow(/map/);
  });

  it('accepts the keys a backend declares, keeps them apart and compares them', () => {
    const parsed = parseVolumeOptions({ size: '1G', replica: '3' }, ['replica', 'disperse']);
    expect(parsed).toEqual({ size: 2 ** 30, backend: { replica: '3' } });
    expect(() => parseVolumeOptions({ replica: '3' })).toThrow(/unknown volume option "replica"/);
    expect(() => parseVolumeOptions({ replca: '3' }, ['replica'])).toThrow(/known options: size, uid, gid, mode, adopt, replica, backup$/);
    expect(sameDefiningOptions(parsed, { size: 2 ** 30, backend: { replica: '3' } })).toBe(true);
    expect(sameDefiningOptions(parsed, { size: 2 ** 30, backend: { replica: '2' } })).toBe(false);
    expect(sameDefiningOptions(parsed, { size: 2 ** 30 })).toBe(false);
  });

  it('answers each key set by its own rules, however many sets come and go', () => {
    // The maps are kept per key set and dropped past a bound: no set may be judged by another's.
    for (let round = 0; round < 2; round += 1) {
      for (let i = 0; i < 40; i += 1) {
        const keys = [`k${i}`, 'shared'];
        expect(parseVolumeOptions({ [`k${i}`]: 'x', shared: 'y' }, keys)).toEqual({ backend: { [`k${i}`]: 'x', shared: 'y' } });
        expect(() => parseVolumeOptions({ [`k${i + 1}`]: 'x' }, keys)).toThrow(new RegExp(`unknown volume option "k${i + 1}"`));
      }
    }
    expect(() => parseVolumeOptions({ k0: 'x' })).toThrow(/unknown volume option "k0"/);
    expect(parseVolumeOptions({ size: '1K' }, ['size'])).toEqual({ size: 1024 });
  });

  it('compares defining options only', () => {
    expect(sameDefiningOptions({ size: 1, adopt: true }, { size: 1 })).toBe(true);
    expect(sameDefiningOptions({ size: 1 }, { size: 2 })).toBe(false);
    expect(sameDefiningOptions({ uid: 1 }, {})).toBe(false);
  });

  it('parses key=value pairs and rejects pairs without a key', () => {
    expect(parseKeyValuePairs(['vfs.path=/a=b', 'x='], '--opt')).toEqual({ 'vfs.path': '/a=b', x: '' });
    expect(() => parseKeyValuePairs(['novalue'], '--opt')).toThrow(/key=value/);
    expect(() => parseKeyValuePairs(['=v'], '--opt')).toThrow(/key=value/);
  });

  it('refuses a key given twice with two values, and keeps __proto__ as a key (for the option check to refuse)', () => {
    expect(() => parseKeyValuePairs(['size=1G', 'size=2G'], '--opt')).toThrow('--opt size is given twice, as "1G" and "2G": give it once');
    expect(parseKeyValuePairs(['size=1G', 'size=1G'], '--opt')).toEqual({ size: '1G' });
    const odd = parseKeyValuePairs(['__proto__=x'], '--opt');
    expect(Object.keys(odd)).toEqual(['__proto__']);
    expect(() => parseVolumeOptions({ ...odd })).toThrow(/unknown volume option "__proto__"/);
  });
});
