import { randomBytes } from 'node:crypto';
import type { JobProgress } from '../../core/backup/service-contract.js';
import { ErrorCodes, StowageError, type Remedy } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { failureOf } from '../http-status.js';

/** The long operations the daemon runs as jobs, so that they outlive the CLI that asked. */
export type JobKind = 'backup-create' | 'backup-delete' | 'backup-verify' | 'restore';

export type JobState = 'running' | 'succeeded' | 'failed';

/** A job as the control API shows it: what it does, how far it got, how it ended. */
export interface JobView {
  id: string;
  kind: JobKind;
  /** What the job works on: the volume, or the backup's URL. */
  target: string;
  state: JobState;
  startedAt: string;
  finishedAt?: string;
  /** The last progress the operation reported; absent until the first. */
  progress?: JobProgress;
  /** The operation's answer, once succeeded. */
  result?: unknown;
  /** Why it failed, as the control API words any failure: remedies as data, for the client to word. */
  error?: { code: string; message: string; remedies?: readonly Remedy[] };
  /** A job asked to stop that had passed the point where it could (its record written, a backup deleted) and finished. */
  note?: string;
}

/** What a follower receives, one per NDJSON line: progress while running, then the end. */
export type JobEvent =
  | { type: 'progress'; progress: JobProgress }
  | { type: 'end'; job: JobView };

export interface JobContext {
  onProgress(progress: JobProgress): void;
  signal: AbortSignal;
}

export interface JobSettings {
  /** How long a finished job stays listed and followable. */
  keepFinishedMs: number;
  /** At most this many finished jobs are kept; the oldest go first. */
  maxFinished: number;
  /**
   * At most this many run at once; more are refused (each holds buffers and a repository lock:
   * 300 verifies at once took the daemon from 76 to 970 MB).
   */
  maxRunning: number;
  now(): number;
}

export const DEFAULT_JOB_SETTINGS: JobSettings = { keepFinishedMs: 60 * 60_000, maxFinished: 100, maxRunning: 32, now: () => Date.now() };

interface Job {
  view: JobView;
  finishedAtMs?: number;
  followers: Set<(event: JobEvent) => void>;
  abort: AbortController;
  /** Settles once the operation has ended and its end is recorded (its locks released, its undo done). */
  done: Promise<void>;
}

const JOB_ID = /^[0-9a-f]{12}$/;

/**
 * The daemon's jobs: each runs to its end whether or not anyone follows it; followers get its
 * progress and its end, and may come and go. Finished jobs are forgotten after a while and
 * beyond a count, so the daemon's memory stays bounded however many jobs it ran.
 */
export class JobRegistry {
  private readonly jobs = new Map<string, Job>();
  private stopping = false;

  /** When this registry (this run of the daemon) began: jobs of an earlier run are not kept. */
  private readonly since: string;

  constructor(private readonly log: Logger, private readonly settings: JobSettings = DEFAULT_JOB_SETTINGS) {
    this.since = new Date(settings.now()).toISOString();
  }

  start(kind: JobKind, target: string, run: (context: JobContext) => Promise<unknown>): JobView {
    if (this.stopping) throw new StowageError(ErrorCodes.CANCELLED, `the daemon is stopping: no new ${kind} job is started`);
    const running = [...this.jobs.values()].filter((j) => j.view.state === 'running').length;
    if (running >= this.settings.maxRunning) {
      throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, `${running} jobs are running, as many as this daemon runs at once: start the ${kind} once some have ended ("stowage job list")`);
    }
    this.prune();
    const id = randomBytes(6).toString('hex');
    const job: Job = {
      view: { id, kind, target, state: 'running', startedAt: new Date(this.settings.now()).toISOString() },
      followers: new Set(),
      abort: new AbortController(),
      done: Promise.resolve(),
    };
    this.jobs.set(id, job);
    this.log.info(`job ${id}: ${kind} ${target} started`, this.fieldsOf(job.view));
    const context: JobContext = {
      signal: job.abort.signal,
      onProgress: (progress) => {
        if (job.view.state !== 'running') return;
        job.view.progress = { ...progress };
        this.emit(job, { type: 'progress', progress: job.view.progress });
      },
    };
    // Started on the next turn, so that a run that fails at once still fails as a job.
    job.done = Promise.resolve().then(() => run(context)).then(
      (result) => this.finish(job, { state: 'succeeded', result }),
      (err: unknown) => {
        const { code, message, remedies } = failureOf(err);
        this.finish(job, { state: 'failed', error: { code, message, ...(remedies.length > 0 ? { remedies } : {}) } });
      },
    );
    return { ...job.view };
  }

  private finish(job: Job, end: Pick<JobView, 'state' | 'result' | 'error'>): void {
    job.finishedAtMs = this.settings.now();
    const tooLate = end.state === 'succeeded' && job.abort.signal.aborted
      ? { note: 'cancelled too late: it had passed the point where it could stop, and finished' } : {};
    Object.assign(job.view, end, tooLate, { finishedAt: new Date(job.finishedAtMs).toISOString() });
    this.log.info(`job ${job.view.id}: ${job.view.kind} ${job.view.target} ${job.view.state}` +
      (job.view.error ? `: ${job.view.error.message}` : '') + (job.view.note ? ` (${job.view.note})` : ''), { ...this.fieldsOf(job.view), ...(job.view.error ? { code: job.view.error.code } : {}) });
    this.emit(job, { type: 'end', job: { ...job.view } });
    job.followers.clear();
  }

  /** Log fields of a job's lines: a restore or backup names its volume, the others their backup. */
  private fieldsOf(view: JobView): Record<string, string> {
    const about = view.kind === 'restore' || view.kind === 'backup-create' ? 'volume' : 'backup';
    return { job: view.id, operation: view.kind.replace('-', '_'), [about]: view.target };
  }

  private emit(job: Job, event: JobEvent): void {
    for (const follower of job.followers) follower(event);
  }

  /** Jobs still known, oldest first. */
  list(): JobView[] {
    this.prune();
    return [...this.jobs.values()].map((j) => ({ ...j.view }));
  }

  get(id: string): JobView {
    return { ...this.job(id).view };
  }

  /**
   * Calls `listener` with the job's last progress, then each new one, then its end (at once
   * when it already ended). Returns the function that stops following; the job goes on.
   */
  follow(id: string, listener: (event: JobEvent) => void): () => void {
    const job = this.job(id);
    if (job.view.state !== 'running') {
      listener({ type: 'end', job: { ...job.view } });
      return () => {};
    }
    if (job.view.progress) listener({ type: 'progress', progress: job.view.progress });
    job.followers.add(listener);
    return () => job.followers.delete(listener);
  }

  /** Asks the running job to stop at its next safe point; it then fails as cancelled. */
  cancel(id: string): JobView {
    const job = this.job(id);
    if (job.view.state === 'running') job.abort.abort(new StowageError(ErrorCodes.CANCELLED, `job ${id} was cancelled`));
    return { ...job.view };
  }

  /** Stops every running job (the daemon is stopping); their ends reach their followers. */
  cancelAll(): void {
    for (const job of this.jobs.values()) {
      if (job.view.state === 'running') job.abort.abort(new StowageError(ErrorCodes.CANCELLED, 'the daemon is stopping'));
    }
  }

  /**
   * For a graceful stop: refuses new jobs, cancels the running ones and waits until each has
   * ended, so that what it holds (repository and volume locks, a restore's half-made volume) is
   * released or undone before the daemon lets go of the backend. A job that has not ended after
   * `waitMs` is left to the process's exit (a restore's journal removes its volume at the next
   * start); the count of those is returned.
   */
  async stopAll(waitMs: number): Promise<number> {
    this.stopping = true;
    const running = [...this.jobs.values()].filter((j) => j.view.state === 'running');
    if (running.length === 0) return 0;
    this.log.info(`stopping ${running.length} running job(s): ${running.map((j) => `${j.view.id} (${j.view.kind} ${j.view.target})`).join(', ')}`);
    this.cancelAll();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => { timer = setTimeout(resolve, waitMs); });
    await Promise.race([Promise.all(running.map((j) => j.done)), deadline]);
    clearTimeout(timer);
    const left = running.filter((j) => j.view.state === 'running');
    if (left.length > 0) this.log.warn(`${left.length} job(s) did not stop within ${Math.round(waitMs / 1000)} s: ${left.map((j) => j.view.id).join(', ')}`);
    return left.length;
  }

  private job(id: string): Job {
    const job = JOB_ID.test(id) ? this.jobs.get(id) : undefined;
    if (!job) {
      throw new StowageError(ErrorCodes.INVALID_REQUEST,
        `no job ${JSON.stringify(id)} on this daemon: finished jobs are forgotten after ${Math.round(this.settings.keepFinishedMs / 60_000)} min ` +
        `(and beyond the ${this.settings.maxFinished} that finished last), ` +
        `and jobs of a run before this one (started at ${this.since}) ended with it (a backup then shows in "stowage backup list" only if it ` +
        `completed; a restore's unfinished volume is removed at start); "stowage job list" shows the jobs it knows`);
    }
    return job;
  }

  private prune(): void {
    const now = this.settings.now();
    // By when they finished: a long job that ended just now is kept over quick ones that ended before it.
    const finished = [...this.jobs.values()].filter((j) => j.finishedAtMs !== undefined).sort((a, b) => a.finishedAtMs! - b.finishedAtMs!);
    const excess = finished.length - this.settings.maxFinished;
    finished.forEach((job, index) => {
      if (index < excess || now - job.finishedAtMs! > this.settings.keepFinishedMs) this.jobs.delete(job.view.id);
    });
  }
}
