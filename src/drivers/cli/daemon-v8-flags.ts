/**
 * V8 flags the daemon sets for itself at start (`setFlagsFromString`), and the environment its
 * launchers set, exported so the benchmark measures a backup process the way the daemon runs it. Each has a measured reason (README,
 * Benchmarks, and bench/RESULTS.md); both are read whenever V8 sizes a space, so they take effect when set at run time.
 * Starting a worker thread undoes the first, process-wide, as V8 sets up the new isolate's heap
 * (README, The backup library: "tried and not kept, half the hashes of a changed file on a worker
 * thread"): the daemon starts none.
 *
 * - `--semi-space-growth-factor=1`: V8 grows the young generation to 16 MiB per semi-space
 *   (about 27 MiB resident) when requests allocate quickly, and keeps it. A daemon's requests
 *   leave little alive, so the young generation stays at its size after start-up (after 10 000
 *   creates: 125-142 MB -> 102-111 MB), for more frequent, small scavenges (a Get measured
 *   0.04-0.09 ms more CPU, a Create none). Measured again after later changes (2026-12-06,
 *   sections 2 and 3 of the bench, two alternating rounds): with it, Get 0.125 ms of CPU and
 *   74-75 MB at rest after 10 000 creates; without, Get 0.130-0.155 ms and 114-115 MB; a fixed
 *   4 MiB semi-space (`--min-semi-space-size=4` beside it) changed neither.
 * - `--heap-growing-percent=10`: after a full collection V8 lets the old generation grow by a
 *   large factor before the next one, and a daemon holding 10 000 volumes (21 MB alive) sat on
 *   32 MB of old space, a third of it garbage. Growing by 10 % instead: old space 20 MB, RSS
 *   after 10 000 creates 102-107 -> 91 MB; CPU per plugin call and per backed-up byte within
 *   run-to-run noise (2026-12-03, alternating runs). `--optimize-for-size` went further (84 MB)
 *   but cost an Unmount 35-40 % more CPU, so it is not used.
 */
export const DAEMON_V8_FLAGS = '--semi-space-growth-factor=1 --heap-growing-percent=10';

/**
 * Environment every launcher of the daemon sets (the systemd unit, the managed plugin's config,
 * `npm start`), since glibc reads it only as a process starts: the daemon cannot set it for itself.
 *
 * - `MALLOC_ARENA_MAX=2`: a backup's compressions run on libuv's four pool threads, and glibc
 *   gives each thread its own malloc arena, which keeps freed memory. Capped at two arenas, a
 *   full backup of the benchmark's 1 GiB tree peaked at 130-134 MiB RSS against 137-151 MiB
 *   without, in the same time (6.4-7.3 s against 6.5-9.8 s), three alternating runs each; 2000
 *   Creates took the same time with and without (2026-12-05).
 */
export const DAEMON_ENVIRONMENT: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2' };

