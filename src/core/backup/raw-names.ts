/**
 * File names as Linux has them: bytes, not text. A name that is not valid UTF-8 (latin1 names
 * from an old share, a name cut inside a character) cannot be written as a JavaScript string
 * and read back the same: Node decodes it with U+FFFD in place of each bad byte, and that
 * string names no file. So a manifest holds each name as text where it is valid UTF-8, and
 * writes each byte that is not as one lone low surrogate, U+DC80 to U+DCFF (Python's
 * "surrogateescape"): JSON carries it as `\udcXX`. Valid UTF-8 never decodes to a lone
 * surrogate, so the mapping goes both ways, and ASCII (`/`, `.`, NUL) is never escaped.
 */

const ESCAPE_BASE = 0xdc00;
// With the u flag a pair is one code point: only a lone surrogate matches.
const LONE_SURROGATE = /[\ud800-\udfff]/u;

/** The name (or path) `bytes` spell, with each byte that is not valid UTF-8 escaped. */
export function nameFromBytes(bytes: Buffer): string {
  const text = bytes.toString('utf8');
  // U+FFFD is where the decoder met a bad byte, or a name that really holds one: look closer.
  return text.includes('\ufffd') ? decodeEscaping(bytes) : text;
}

function decodeEscaping(bytes: Buffer): string {
  let out = '';
  let i = 0;
  while (i < bytes.length) {
    const length = validSequenceAt(bytes, i);
    if (length === 0) {
      out += String.fromCharCode(ESCAPE_BASE + bytes[i]!);
      i += 1;
    } else {
      out += bytes.toString('utf8', i, i + length);
      i += length;
    }
  }
  return out;
}

/** The length of the well-formed UTF-8 sequence at `i` (RFC 3629: no overlongs, no surrogates), or 0. */
function validSequenceAt(bytes: Buffer, i: number): number {
  const b0 = bytes[i]!;
  if (b0 < 0x80) return 1;
  const cont = (k: number, low = 0x80, high = 0xbf) => {
    const b = bytes[i + k];
    return b !== undefined && b >= low && b <= high;
  };
  if (b0 >= 0xc2 && b0 <= 0xdf) return cont(1) ? 2 : 0;
  if (b0 === 0xe0) return cont(1, 0xa0) && cont(2) ? 3 : 0;
  if ((b0 >= 0xe1 && b0 <= 0xec) || b0 === 0xee || b0 === 0xef) return cont(1) && cont(2) ? 3 : 0;
  if (b0 === 0xed) return cont(1, 0x80, 0x9f) && cont(2) ? 3 : 0;
  if (b0 === 0xf0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (b0 >= 0xf1 && b0 <= 0xf3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (b0 === 0xf4) return cont(1, 0x80, 0x8f) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

/** The bytes a name written by nameFromBytes stands for. */
export function bytesFromName(name: string): Buffer {
  if (!LONE_SURROGATE.test(name)) return Buffer.from(name, 'utf8');
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i < name.length; i += 1) {
    const unit = name.charCodeAt(i);
    if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < name.length) {
      const next = name.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) { i += 1; continue; } // a pair: one character
    }
    if (unit >= 0xdc80 && unit <= 0xdcff) {
      parts.push(Buffer.from(name.slice(start, i), 'utf8'), Buffer.of(unit - ESCAPE_BASE));
      start = i + 1;
    }
  }
  parts.push(Buffer.from(name.slice(start), 'utf8'));
  return Buffer.concat(parts);
}

/**
 * What to hand to node:fs for a path holding escaped names: the string itself when it has
 * none (the common case, and no copy), the bytes otherwise.
 */
export function fsPath(path: string): string | Buffer {
  return LONE_SURROGATE.test(path) ? bytesFromName(path) : path;
}

/**
 * Whether `name` is exactly what nameFromBytes writes for some bytes: escapes only for bytes
 * that are not valid UTF-8 where they stand, no other lone surrogate. A manifest from another
 * machine is checked with it, so two spellings never name one file (`é` and its two bytes
 * escaped) and no escape stands for ASCII.
 */
export function isCanonicalName(name: string): boolean {
  if (!LONE_SURROGATE.test(name)) return true;
  return nameFromBytes(bytesFromName(name)) === name;
}
