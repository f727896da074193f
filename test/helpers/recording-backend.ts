import type { Backend, CreateRequest, RemoveOutcome, RemoveRequest, VolumeRecord } from '../../src/core/backend.js';

/** Wraps a real backend, counting calls and letting a test make the next calls fail. */
export class RecordingBackend implements Backend {
  readonly calls: string[] = [];
  failGet?: Error;
  failDetach?: Error;
  /** Runs before each ready() (the first call the core makes for a volume, before its locks). */
  onReady?: (name: string) => Promise<void>;

  constructor(private readonly inner: Backend) {}

  get name() { return this.inner.name; }
  get capabilities() { return this.inner.capabilities; }
  count(call: string): number { return this.calls.filter((c) => c === call).length; }

  init() { return this.inner.init(); }
  async ready(name: string) {
    await this.onReady?.(name);
    await this.inner.ready?.(name);
  }
  dispose() { return this.inner.dispose(); }
  create(r: CreateRequest): Promise<VolumeRecord> { this.calls.push('create'); return this.inner.create(r); }
  async get(name: string) {
    if (this.failGet) throw this.failGet;
    return this.inner.get(name);
  }
  list() { return this.inner.list(); }
  remove(name: string, r: RemoveRequest): Promise<RemoveOutcome> { this.calls.push('remove'); return this.inner.remove(name, r); }
  attach(name: string) { this.calls.push('attach'); return this.inner.attach(name); }
  async detach(name: string) {
    this.calls.push('detach');
    if (this.failDetach) throw this.failDetach;
    return this.inner.detach(name);
  }
  volumeStatus(name: string) { return this.inner.volumeStatus(name); }
  describe() { return this.inner.describe(); }
}
