import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { consoleLogger } from '../../src/core/logger.js';

describe('consoleLogger', () => {
  let writes: string[];
  const logger = () => consoleLogger('stowage', (text) => writes.push(text));

  beforeEach(() => {
    writes = [];
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('holds info lines and writes them together once the delay passes', () => {
    const log = logger();
    log.info('created volume a');
    log.info('created volume b');
    expect(writes).toEqual([]);
    vi.runOnlyPendingTimers();
    expect(writes).toHaveLength(1);
    expect(writes[0]).toMatch(/^\S+ stowage info created volume a\n\S+ stowage info created volume b\n$/);
  });

  it('writes a warning at once, after the info lines logged before it', () => {
    const log = logger();
    log.info('created volume a');
    log.warn('something odd');
    expect(writes.join('')).toMatch(/info created volume a\n.* warn something odd\n$/);
    log.error('it failed');
    expect(writes.at(-1)).toMatch(/ error it failed\n$/);
    vi.runOnlyPendingTimers();
    expect(writes.join('').match(/created volume a/g)).toHaveLength(1);
  });

  it('writes what it holds on flush, and nothing twice', () => {
    const log = logger();
    log.info('listening');
    log.flush();
    expect(writes).toHaveLength(1);
    vi.runOnlyPendingTimers();
    log.flush();
    expect(writes).toHaveLength(1);
  });

  it('writes the buffer at once when it grows large', () => {
    const log = logger();
    const long = 'x'.repeat(1000);
    for (let i = 0; i < 70; i += 1) log.info(long);
    expect(writes).toHaveLength(1);
    expect(writes[0]!.length).toBeGreaterThanOrEqual(64 * 1024);
  });
});
