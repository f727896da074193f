import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ExecaCommandRunner } from '../../src/core/command-runner.js';
import { consoleLogger, prettyLine, redactText, withLogContext, type LoggerOptions } from '../../src/core/logger.js';

const parse = (text: string) => text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);

describe('consoleLogger buffering', () => {
  let writes: string[];
  const logger = (options: LoggerOptions = {}) => consoleLogger({ format: 'json', write: (text) => writes.push(text), ...options });

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
    expect(parse(writes[0]!).map((l) => [l.level, l.msg])).toEqual([['info', 'created volume a'], ['info', 'created volume b']]);
  });

  it('writes a warning at once, after the info lines logged before it', () => {
    const log = logger();
    log.info('created volume a');
    log.warn('something odd');
    expect(parse(writes.join('')).map((l) => l.msg)).toEqual(['created volume a', 'something odd']);
    log.error('it failed');
    expect(parse(writes.at(-1)!)[0]).toMatchObject({ level: 'error', msg: 'it failed' });
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

describe('consoleLogger lines', () => {
  const capture = (options: LoggerOptions = {}) => {
    let text = '';
    const log = consoleLogger({ format: 'json', write: (t) => { text += t; }, ...options });
    return { log, lines: () => { log.flush(); return parse(text); } };
  };

  it('writes one JSON object a line with time, level, message, the base fields and the given ones', () => {
    const { log, lines } = capture({ base: { node: 'n1' } });
    log.info('created volume a', { backend: 'vfs' });
    const [line] = lines();
    expect(line).toMatchObject({ level: 'info', msg: 'created volume a', node: 'n1', backend: 'vfs' });
    expect(new Date(String(line!.time)).toISOString()).toBe(line!.time);
  });

  it('adds the operation and volume of the operation running to every line logged during it, and not after', async () => {
    const { log, lines } = capture({ base: { node: 'n1' } });
    await withLogContext({ operation: 'create', volume: 'v1' }, async () => {
      await new Promise((r) => setImmediate(r));
      log.info('inside');
      await withLogContext({ step: 'attach' }, async () => log.warn('nested'));
    });
    log.info('outside');
    const [inside, nested, outside] = lines();
    expect(inside).toMatchObject({ msg: 'inside', operation: 'create', volume: 'v1', node: 'n1' });
    expect(nested).toMatchObject({ msg: 'nested', operation: 'create', volume: 'v1', step: 'attach' });
    expect(outside).not.toHaveProperty('volume');
    expect(outside).not.toHaveProperty('operation');
  });

  it('drops lines below its level: debug only when asked', () => {
    const quiet = capture();
    quiet.log.debug('ran dmsetup');
    quiet.log.info('shown');
    expect(quiet.lines().map((l) => l.msg)).toEqual(['shown']);
    expect(quiet.log.enabled('debug')).toBe(false);
    const loud = capture({ level: 'debug' });
    loud.log.debug('ran dmsetup');
    expect(loud.lines()).toEqual([expect.objectContaining({ level: 'debug', msg: 'ran dmsetup' })]);
    const warnOnly = capture({ level: 'warn' });
    warnOnly.log.info('hidden');
    warnOnly.log.error('shown');
    expect(warnOnly.lines().map((l) => l.msg)).toEqual(['shown']);
  });

  it('redacts credentials in messages and secret fields', () => {
    const { log, lines } = capture();
    log.info('backup to s3://AKIAEXAMPLE:wJalrXUtnFEMI@s3.example.com/bucket failed; secretKey=hunter2 path=/srv', {
      env: { AWS_SECRET_ACCESS_KEY: 'hunter3' }, target: { secretAccessKey: 'hunter4', bucket: 'b' }, password: 'hunter5',
    });
    const [line] = lines();
    const text = JSON.stringify(line);
    for (const secret of ['wJalrXUtnFEMI', 'hunter2', 'hunter3', 'hunter4', 'hunter5']) expect(text).not.toContain(secret);
    expect(line!.msg).toBe('backup to s3://AKIAEXAMPLE:[redacted]@s3.example.com/bucket failed; secretKey=[redacted] path=/srv');
    expect(line).toMatchObject({ env: '[redacted]', target: { secretAccessKey: '[redacted]', bucket: 'b' }, password: '[redacted]' });
  });

  it('leaves text without secrets alone', () => {
    expect(redactText('mounted gluster volume p1 at /var/lib/stowage/p1 (vfs.path=/srv)')).toBe('mounted gluster volume p1 at /var/lib/stowage/p1 (vfs.path=/srv)');
  });

  it('writes a readable line on a terminal: time, level, message, then the fields', () => {
    let text = '';
    const log = consoleLogger({ format: 'pretty', base: { node: 'n1' }, write: (t) => { text += t; } });
    log.warn('volume v1 is mounted elsewhere', { volume: 'v1', count: 2 });
    expect(text).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z WARN  volume v1 is mounted elsewhere {2}node=n1 volume=v1 count=2\n$/);
    expect(prettyLine('{"time":"t","level":"info","msg":"m","why":"two words"}')).toBe('t INFO  m  why="two words"\n');
  });
});

describe('ExecaCommandRunner logging', () => {
  it('logs every program run at debug: argv (secrets redacted), exit code and duration, never its input', async () => {
    let text = '';
    const log = consoleLogger({ format: 'json', level: 'debug', write: (t) => { text += t; } });
    const runner = new ExecaCommandRunner(log);
    await runner.run('sh', ['-c', 'cat >/dev/null; exit 0', 'password=hunter2'], { input: 'topsecret' });
    await runner.run('sh', ['-c', 'echo nope >&2; exit 3'], { allowFailure: true });
    await expect(runner.run('/nonexistent/program', [])).rejects.toThrow(/cannot run/);
    log.flush();
    expect(text).not.toContain('hunter2');
    expect(text).not.toContain('topsecret');
    const [ok, failed, missing] = parse(text);
    expect(ok).toMatchObject({ level: 'debug', msg: 'ran sh', argv: ['sh', '-c', 'cat >/dev/null; exit 0', 'password=[redacted]'], exitCode: 0 });
    expect(typeof ok!.durationMs).toBe('number');
    expect(failed).toMatchObject({ argv: ['sh', '-c', 'echo nope >&2; exit 3'], exitCode: 3, stderr: 'nope' });
    expect(missing).toMatchObject({ msg: 'ran /nonexistent/program', exitCode: null });
    expect(missing!.spawnError).toBeTruthy();
  });

  it('logs nothing at the info level', async () => {
    let text = '';
    const log = consoleLogger({ format: 'json', write: (t) => { text += t; } });
    await new ExecaCommandRunner(log).run('true', []);
    log.flush();
    expect(text).toBe('');
  });
});
