/**
 * V8 flags the daemon sets for itself at start (`setFlagsFromString`), exported so the benchmark
 * measures a backup process the way the daemon runs it. Each has a measured reason (README,
 * Benchmarks); both are read whenever V8 sizes a space, so they take effect when set at run time.
 *
 * - `--semi-space-growth-factor=1`: V8 grows the young generation to 16 MiB per semi-space
 *   (about 27 MiB resident) when requests allocate quickly, and keeps it. A daemon's requests
 *   leave little alive, so the young generation stays at its size after start-up (after 10 000
 *   creates: 125-142 MB -> 102-111 MB), for more frequent, small scavenges (a Get measured
 *   0.04-0.09 ms more CPU, a Create none).
 * - `--heap-growing-percent=10`: after a full collection V8 lets the old generation grow by a
 *   large factor before the next one, and a daemon holding 10 000 volumes (21 MB alive) sat on
 *   32 MB of old space, a third of it garbage. Growing by 10 % instead: old space 20 MB, RSS
 *   after 10 000 creates 102-107 -> 91 MB; CPU per plugin call and per backed-up byte within
 *   run-to-run noise (2026-12-03, alternating runs). `--optimize-for-size` went further (84 MB)
 *   but cost an Unmount 35-40 % more CPU, so it is not used.
 */
export const DAEMON_V8_FLAGS = '--semi-space-growth-factor=1 --heap-growing-percent=10';
