/**
 * A decoder of the LZ4 block format (the part after lz4_flex's 4-byte length prefix), in
 * JavaScript: lz4 blobs must read wherever stowage runs, also where lz4-napi's native module
 * does not load. Treats its input as hostile: it never writes past `rawLength`, never copies
 * from before the start of the output, and fails unless the block decodes to exactly
 * `rawLength` bytes.
 */
export function lz4BlockDecode(input: Uint8Array, rawLength: number): Buffer {
  const out = Buffer.allocUnsafe(rawLength);
  const end = input.length;
  let ip = 0;
  let op = 0;
  const fail = (why: string): never => { throw new Error(`lz4 block is corrupt: ${why}`); };
  while (ip < end) {
    const token = input[ip++]!;
    let literals = token >>> 4;
    if (literals === 15) {
      let more: number;
      do {
        if (ip >= end) fail('truncated literal length');
        more = input[ip++]!;
        literals += more;
      } while (more === 255);
    }
    if (ip + literals > end) fail('literals run past the input');
    if (op + literals > rawLength) fail('literals run past the stated length');
    // Short runs byte by byte: a subarray per run costs more than the copy.
    if (literals < 64) {
      for (const stop = ip + literals; ip < stop;) out[op++] = input[ip++]!;
    } else {
      out.set(input.subarray(ip, ip + literals), op);
      ip += literals;
      op += literals;
    }
    // The last sequence has literals only.
    if (ip === end) break;
    if (ip + 2 > end) fail('truncated match offset');
    const offset = input[ip]! | (input[ip + 1]! << 8);
    ip += 2;
    if (offset === 0 || offset > op) fail('match offset out of range');
    let length = (token & 15) + 4;
    if ((token & 15) === 15) {
      let more: number;
      do {
        if (ip >= end) fail('truncated match length');
        more = input[ip++]!;
        length += more;
      } while (more === 255);
    }
    if (op + length > rawLength) fail('match runs past the stated length');
    let from = op - offset;
    if (offset >= length && length >= 64) {
      out.copyWithin(op, from, from + length);
      op += length;
    } else {
      // Short, or overlapping (the match repeats the last `offset` bytes): byte by byte.
      for (const stop = op + length; op < stop;) out[op++] = out[from++]!;
    }
  }
  if (op !== rawLength) fail(`decodes to ${op} bytes, not ${rawLength}`);
  return out;
}
