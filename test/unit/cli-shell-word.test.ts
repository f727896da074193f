import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { removalLine, shellWord } from '../../src/drivers/cli/output.js';

describe('a URL printed inside a command to paste', () => {
  it('reads back as one word, exactly, through a real shell, whatever quotes or shell syntax it holds', () => {
    for (const text of ["vfs:///srv/it's%3B(x)?volume=pg..removed-1", "a'b''c", "'; touch /tmp/pwned; '", '$(id) `id` "x" \\ *', '']) {
      const out = execFileSync('bash', ['-c', `printf '%s|' ${shellWord(text)}`]).toString();
      expect(out).toBe(`${text}|`);
    }
  });
});

describe("stowage delete's line", () => {
  const url = "vfs:///srv/store/.stowage/snapshots?volume=pg..removed-20261205T190000Z-a1b2c3";
  it('names the kept data and the retained volume\'s snapshots, or says the snapshots kept are an earlier volume\'s', () => {
    expect(removalLine('pg', { name: 'pg' })).toBe('pg');
    expect(removalLine('pg', { name: 'pg', retainedAt: '/srv/store/.stowage/removed/pg@x', snapshotsKept: { snapshots: 2, backups: 2, url } }))
      .toBe(`pg (data kept at /srv/store/.stowage/removed/pg@x; its 2 snapshot(s) kept as backups: stowage backup list --dest '${url}')`);
    expect(removalLine('pg', { name: 'pg', snapshotsKept: { snapshots: 1, backups: 1, url, ofEarlierVolume: true } }))
      .toBe(`pg (1 snapshot(s) of an earlier volume pg, finished after it was removed, kept as backups: stowage backup list --dest '${url}')`);
  });
});
