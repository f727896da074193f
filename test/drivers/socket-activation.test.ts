/** The parts of socket activation that read the environment and the kernel's socket table. */
import { describe, expect, it } from 'vitest';
import { parseProcNetUnix, takeListenFds } from '../../src/drivers/socket-activation.js';

describe('takeListenFds', () => {
  it('takes fd 3 when LISTEN_PID is this process, and removes the variables', () => {
    const env: NodeJS.ProcessEnv = { LISTEN_PID: '42', LISTEN_FDS: '2', LISTEN_FDNAMES: 'stowage.socket:x', KEEP: '1' };
    expect(takeListenFds(env, 42)).toEqual({ fd: 3, count: 2 });
    expect(env).toEqual({ KEEP: '1' });
  });

  it('ignores descriptors meant for another process, but still removes the variables', () => {
    const env: NodeJS.ProcessEnv = { LISTEN_PID: '41', LISTEN_FDS: '1' };
    expect(takeListenFds(env, 42)).toBeUndefined();
    expect(env).toEqual({});
  });

  it('takes nothing without LISTEN_FDS or with a count below 1', () => {
    for (const env of [{ LISTEN_PID: '42' }, { LISTEN_PID: '42', LISTEN_FDS: '0' }, { LISTEN_PID: '42', LISTEN_FDS: 'x' }, {}]) {
      expect(takeListenFds({ ...env }, 42), JSON.stringify(env)).toBeUndefined();
    }
  });
});

describe('parseProcNetUnix', () => {
  it('reads flags, type, inode and path, with and without a path', () => {
    const text = [
      'Num       RefCount Protocol Flags    Type St Inode Path',
      '000000000e6e8c22: 00000002 00000000 00010000 0001 01 1028310 /run/docker/plugins/stowage.sock',
      '0000000000000000: 00000003 00000000 00000000 0001 03 1028311',
      '0000000000000000: 00000002 00000000 00000000 0002 01 1028312 @abstract',
      '',
    ].join('\n');
    expect(parseProcNetUnix(text)).toEqual([
      { flags: 0x10000, type: 1, inode: '1028310', path: '/run/docker/plugins/stowage.sock' },
      { flags: 0, type: 1, inode: '1028311', path: undefined },
      { flags: 0, type: 2, inode: '1028312', path: '@abstract' },
    ]);
  });
});
