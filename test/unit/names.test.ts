import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../src/core/errors.js';
import { MAX_NAME_LENGTH, validateVolumeName } from '../../src/core/names.js';

describe('validateVolumeName', () => {
  it.each(['db', 'my-volume_1', 'a.b', 'X9', 'a'.repeat(MAX_NAME_LENGTH)])('accepts %s', (name) => {
    expect(validateVolumeName(name)).toBe(name);
  });

  it.each([
    ['', /empty/],
    ['a', /at least 2/],
    ['../etc', /path separators/],
    ['a/b', /path separators/],
    ['a\\b', /path separators/],
    ['a..b', /"\.\."/],
    ['..', /"\.\."/],
    ['.hidden', /starting with a letter or digit/],
    ['-flag', /starting with a letter or digit/],
    ['with space', /letters, digits/],
    ['tab\there', /control characters/],
    ['nul\u0000x', /control characters/],
    ['del\u007fx', /control characters/],
    ['ünïcode', /letters, digits/],
    ['a'.repeat(MAX_NAME_LENGTH + 1), /longer than/],
  ])('rejects %j with a reason', (name, reason) => {
    expect(() => validateVolumeName(name)).toThrow(reason);
    try {
      validateVolumeName(name);
    } catch (err) {
      expect(err).toMatchObject({ code: ErrorCodes.INVALID_NAME });
    }
  });

  it('names the wrong character of a one-character name, and the length only when the character is right', () => {
    expect(() => validateVolumeName('é')).toThrow(/invalid volume name "é": use letters, digits/);
    expect(() => validateVolumeName('_')).toThrow(/use letters, digits/);
    expect(() => validateVolumeName('a')).toThrow(/needs at least 2 characters/);
  });

  it('rejects non-strings', () => {
    expect(() => validateVolumeName(42)).toThrow(/must be a string/);
    expect(() => validateVolumeName(undefined)).toThrow(/must be a string/);
  });
});
