import cliProgress from 'cli-progress';
import type { JobProgress } from '../../core/backup/service-contract.js';

/** Shows a job's progress while the CLI follows it. */
export interface ProgressView {
  update(progress: JobProgress): void;
  /** Removes a bar, ends a line: the next output starts on a clean line. */
  stop(): void;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** Rate and ETA over what this follower saw (a re-follow starts counting anew). */
class Meter {
  private readonly start = Date.now();
  private firstBytes?: number;

  measure(p: JobProgress): { rate: number; eta?: number } {
    this.firstBytes ??= p.bytes;
    const seconds = (Date.now() - this.start) / 1000;
    const rate = seconds > 0.5 ? (p.bytes - this.firstBytes) / seconds : 0;
    const eta = p.totalBytes !== undefined && rate > 0 ? (p.totalBytes - p.bytes) / rate : undefined;
    return { rate, eta };
  }
}

/** One line of text: `backup 12/40 files, 1.0 MiB/3.2 MiB, 512.0 KiB/s, ETA 4s`. */
export function describeProgress(p: JobProgress, rate: number, eta?: number): string {
  const files = p.totalFiles !== undefined ? `${p.files}/${p.totalFiles}` : String(p.files);
  const bytes = p.totalBytes !== undefined ? `${formatBytes(p.bytes)}/${formatBytes(p.totalBytes)}` : formatBytes(p.bytes);
  // A follower that saw only the end (a short job) has no rate to show.
  const speed = rate > 0 ? `, ${formatBytes(rate)}/s` : '';
  return `${p.phase} ${files} ${p.unit ?? 'files'}, ${bytes}${speed}${eta !== undefined ? `, ETA ${formatDuration(eta)}` : ''}`;
}

/** A bar on the terminal (stderr, so stdout keeps only the answer). */
class BarView implements ProgressView {
  private readonly meter = new Meter();
  private readonly bar = new cliProgress.SingleBar({
    stream: process.stderr,
    format: '{phase} [{bar}] {percentage}% | {files} {unit} | {done}/{total_bytes} | {rate}/s | ETA {eta_text}',
    hideCursor: true,
    clearOnComplete: false,
    etaBuffer: 50,
  }, cliProgress.Presets.shades_classic);
  private started = false;

  update(p: JobProgress): void {
    const { rate, eta } = this.meter.measure(p);
    const payload = {
      phase: p.phase.padEnd(7),
      files: p.totalFiles !== undefined ? `${p.files}/${p.totalFiles}` : String(p.files),
      unit: p.unit ?? 'files',
      done: formatBytes(p.bytes),
      total_bytes: p.totalBytes !== undefined ? formatBytes(p.totalBytes) : '?',
      rate: formatBytes(rate),
      eta_text: eta !== undefined ? formatDuration(eta) : '?',
    };
    // Without a known total the bar cannot fill: it shows the counts and stays at 0 %.
    const total = Math.max(p.totalBytes ?? 0, p.bytes, 1);
    if (!this.started) {
      this.bar.start(total, p.bytes, payload);
      this.started = true;
    } else {
      this.bar.setTotal(total);
      this.bar.update(p.bytes, payload);
    }
  }

  stop(): void {
    if (this.started) this.bar.stop();
  }
}

/** Plain lines for logs and pipes: one when the phase changes, else at most one every few seconds. */
class LineView implements ProgressView {
  private readonly meter = new Meter();
  private lastPhase?: string;
  private lastAt = 0;

  constructor(private readonly everyMs: number) {}

  /** The newest line not written yet: written at stop, so the last line shows where it ended. */
  private unwritten?: string;

  update(p: JobProgress): void {
    const { rate, eta } = this.meter.measure(p);
    const now = Date.now();
    const line = describeProgress(p, rate, eta);
    if (p.phase === this.lastPhase && now - this.lastAt < this.everyMs) {
      this.unwritten = line;
      return;
    }
    this.lastPhase = p.phase;
    this.lastAt = now;
    this.unwritten = undefined;
    process.stderr.write(`${line}\n`);
  }

  stop(): void {
    if (this.unwritten !== undefined) process.stderr.write(`${this.unwritten}\n`);
    this.unwritten = undefined;
  }
}

const silent: ProgressView = { update: () => {}, stop: () => {} };

/** A bar in a terminal, plain lines when stdout is not one, nothing for --json. */
export function progressView(json: boolean): ProgressView {
  if (json) return silent;
  return process.stdout.isTTY ? new BarView() : new LineView(2000);
}
