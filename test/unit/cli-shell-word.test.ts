import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { shellWord } from '../../src/drivers/cli/output.js';

describe('a URL printed inside a command to paste', () => {
  it('reads back as one word, exactly, through a real shell, whatever quotes or shell syntax it holds', () => {
    for (const text of ["vfs:///srv/it's%3B(x)?volume=pg..removed-1", "a'b''c", "'; touch /tmp/pwned; '", '$(id) `id` "x" \\ *', '']) {
      const out = execFileSync('bash', ['-c', `printf '%s|' ${shellWord(text)}`]).toString();
      expect(out).toBe(`${text}|`);
    }
  });
});
