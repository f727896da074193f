// libuv runs file system calls on a pool of 4 threads by default; a daemon doing many small
// fsyncs on behalf of concurrent Docker requests is faster with more. This module is imported
// first so the setting is in place before the pool starts.
process.env.UV_THREADPOOL_SIZE ??= '16';
export {};
