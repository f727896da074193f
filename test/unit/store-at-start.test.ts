/**
 * What a vfs daemon does at start with what it finds at vfs.path and what the node remembers:
 * one decision, acted on by the backend's init and reported by `stowage doctor`.
 */
import { describe, expect, it } from 'vitest';
import { storeVerdict, type StoreFound } from '../../src/backends/vfs/store-at-start.js';

const base = { path: '/mnt/nfs/stowage', nodeStatePath: '/var/lib/stowage/vfs-store.json' } as const;
const found = (over: Partial<StoreFound>): StoreFound => ({ ...base, shared: 'auto', store: 'no marker', remembered: undefined, ...over });
const here = { path: base.path, storeId: 'aaaa1111' };

describe('the store a vfs daemon starts on', () => {
  it('refuses a path that is gone, or no longer holds the store, where this node used one, naming both remedies', () => {
    for (const shared of ['auto', true, false] as const) {
      expect(storeVerdict(found({ shared, store: 'no directory', remembered: here }))).toEqual({
        kind: 'refuse', problem: 'vfs.path /mnt/nfs/stowage does not exist, but this node used stowage store aaaa1111 there before',
        remedy: 'mount its filesystem there, then start stowage; if the store is really gone, remove /var/lib/stowage/vfs-store.json to start a new one',
      });
      expect(storeVerdict(found({ shared, store: 'no marker', remembered: here }))).toMatchObject({
        kind: 'refuse', problem: 'vfs.path /mnt/nfs/stowage no longer holds stowage store aaaa1111 that this node used before',
        remedy: expect.stringContaining('remove /var/lib/stowage/vfs-store.json'),
      });
    }
  });

  it('refuses a missing path declared shared; makes one otherwise', () => {
    expect(storeVerdict(found({ shared: true, store: 'no directory' }))).toEqual({
      kind: 'refuse', problem: 'vfs.path /mnt/nfs/stowage does not exist', remedy: 'mount the shared filesystem there before starting stowage',
    });
    expect(storeVerdict(found({ store: 'no directory' }))).toEqual({ kind: 'new', makesPath: true, checkShared: false });
  });

  it('makes a new store in a directory without one, checking the mount first where declared shared', () => {
    expect(storeVerdict(found({ shared: true }))).toEqual({ kind: 'new', makesPath: false, checkShared: true });
    expect(storeVerdict(found({ shared: false }))).toEqual({ kind: 'new', makesPath: false, checkShared: false });
    // A memory of another path (vfs.path changed), or without a store id, is no lost store.
    expect(storeVerdict(found({ remembered: { path: '/srv/old', storeId: 'bbbb2222' } })).kind).toBe('new');
    expect(storeVerdict(found({ store: 'no directory', remembered: { path: base.path } })).kind).toBe('new');
  });

  it('opens the store there, naming the other store this node used at the path before', () => {
    expect(storeVerdict(found({ store: { storeId: 'aaaa1111' }, remembered: here }))).toEqual({ kind: 'open', storeId: 'aaaa1111' });
    expect(storeVerdict(found({ store: { storeId: 'cccc3333' } }))).toEqual({ kind: 'open', storeId: 'cccc3333' });
    expect(storeVerdict(found({ store: { storeId: 'cccc3333' }, remembered: here }))).toEqual({ kind: 'open', storeId: 'cccc3333', replaces: 'aaaa1111' });
    expect(storeVerdict(found({ store: { storeId: 'cccc3333' }, remembered: { path: '/srv/old', storeId: 'aaaa1111' } })))
      .toEqual({ kind: 'open', storeId: 'cccc3333' });
  });
});
