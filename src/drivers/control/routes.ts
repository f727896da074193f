import type { ServerResponse } from 'node:http';
import { Router } from 'express';
import { parseBackupUrl } from '../../core/backup/backup-url.js';
import type { BackupService } from '../../core/backup/service-contract.js';
import { ErrorCodes, StowageError, isStowageError } from '../../core/errors.js';
import { validateVolumeName } from '../../core/names.js';
import type { VolumeManager } from '../../core/volume-manager.js';
import { jsonBody } from '../http-body.js';
import { failureOf } from '../http-status.js';
import {
  controlEndpoints as api, controlErrorBody, parseRequest,
  type ControlEndpoint, type JobRequest, type ResponseOf, type ValidRequestOf,
} from './endpoints.js';
import type { JobEvent, JobRegistry, JobView } from './jobs.js';

/** A follower gets at most this many progress lines a second; the end is never held back. */
const PROGRESS_INTERVAL_MS = 250;

/** `snap-20260102-030405`: sortable, and a valid snapshot name on every backend. */
export function generatedSnapshotName(now: Date): string {
  return `snap-${now.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15)}`;
}

/** JSON API for the stowage CLI, on the same socket as the Docker protocol. */
export function controlRoutes(manager: VolumeManager, jobs: JobRegistry, backups?: BackupService): Router {
  const router = Router();
  const serve = <E extends ControlEndpoint>(endpoint: E, handler: (request: ValidRequestOf<E>) => Promise<ResponseOf<E>>) => {
    router.post(endpoint.path, async (req, res) => {
      try {
        res.json(await handler(parseRequest(endpoint, jsonBody(req))));
      } catch (err) {
        const failure = failureOf(err);
        res.status(failure.status).json(controlErrorBody(failure));
      }
    });
  };
  const backupService = (): BackupService => {
    if (!backups) throw new StowageError(ErrorCodes.NOT_SUPPORTED, 'this daemon has no backup service');
    return backups;
  };
  serve(api.create, (r) => manager.create(r.name, r.options ?? {}));
  serve(api.remove, (r) => manager.remove(r.name, { retain: r.retain, force: r.force }));
  serve(api.list, async () => ({ volumes: await manager.list() }));
  serve(api.inspect, (r) => manager.get(r.name));
  serve(api.info, () => manager.info());
  // A plain call although a snapshot on vfs copies the volume's files into a repository: the
  // daemon finishes it even when the caller goes away, and the client waits as long as it takes.
  serve(api.createSnapshot, async (r) => {
    const options = { consistent: r.consistent, force: r.force, ...(r.xattrs !== undefined ? { xattrs: r.xattrs } : {}) };
    if (r.name !== undefined) return manager.createSnapshot(r.volume, r.name, options);
    // Names from the time are to the second: a second snapshot within it gets -2, -3, ...
    const base = generatedSnapshotName(new Date());
    for (let n = 1; ; n += 1) {
      try {
        return await manager.createSnapshot(r.volume, n === 1 ? base : `${base}-${n}`, options);
      } catch (err) {
        if (!isStowageError(err, ErrorCodes.SNAPSHOT_EXISTS) || n >= 20) throw err;
      }
    }
  });
  serve(api.listSnapshots, async (r) => ({ snapshots: await manager.listSnapshots(r.volume) }));
  serve(api.inspectSnapshot, async (r) => {
    validateVolumeName(r.name, 'snapshot name');
    const found = (await manager.listSnapshots(r.volume)).find((s) => s.name === r.name);
    if (!found) throw new StowageError(ErrorCodes.SNAPSHOT_NOT_FOUND, `volume ${r.volume} has no snapshot ${r.name}`, { volume: r.volume });
    return found;
  });
  serve(api.deleteSnapshot, async (r) => {
    await manager.deleteSnapshot(r.volume, r.name);
    return {};
  });
  serve(api.nodes, async () => ({ nodes: await manager.nodes(), invalid: manager.invalidNodes() }));
  serve(api.forgetNode, async (r) => {
    await manager.forgetNode(r.node);
    return {};
  });
  serve(api.mounts, async () => ({ mounts: manager.mountRecords() }));
  serve(api.release, async (r) => ({ released: await manager.release(r.name, { id: r.id, force: r.force }) }));
  serve(api.mountByHand, (r) => manager.mountByHand(r.name, r.label));
  serve(api.unmountByHand, (r) => manager.unmountByHand(r.name, r.label));
  serve(api.listBackups, async (r) => ({ backups: await backupService().listBackups(r.dest, { volume: r.volume }) }));
  serve(api.inspectBackup, (r) => backupService().inspectBackup(r.url));
  serve(api.startJob, (r) => startJob(manager, jobs, backupService(), r));
  serve(api.listJobs, async () => ({ jobs: jobs.list() }));
  serve(api.inspectJob, async (r) => jobs.get(r.id));
  serve(api.cancelJob, async (r) => jobs.cancel(r.id));
  router.post(api.followJob.path, (req, res) => {
    let stop: () => void = () => {};
    try {
      const { id } = parseRequest(api.followJob, jsonBody(req));
      stop = jobs.follow(id, streamTo(res));
    } catch (err) {
      const failure = failureOf(err);
      if (!res.headersSent) res.status(failure.status).json(controlErrorBody(failure));
      else res.end();
      return;
    }
    // The follower went away (a Ctrl-C in the CLI): the job goes on.
    res.on('close', () => stop());
  });
  return router;
}

/** Writes a job's events as NDJSON, progress no faster than PROGRESS_INTERVAL_MS, and ends with its end. */
function streamTo(res: ServerResponse): (event: JobEvent) => void {
  let lastWrite = 0;
  let pending: JobEvent | undefined;
  let timer: NodeJS.Timeout | undefined;
  const write = (event: JobEvent) => {
    if (!res.headersSent) res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
    res.write(`${JSON.stringify(event)}\n`);
    lastWrite = Date.now();
  };
  const flush = () => {
    timer = undefined;
    if (pending) write(pending);
    pending = undefined;
  };
  return (event) => {
    if (res.writableEnded || res.destroyed) return;
    if (event.type === 'end') {
      clearTimeout(timer);
      // The last progress goes out before the end, so a follower's last line shows where it ended.
      if (pending) write(pending);
      pending = undefined;
      write(event);
      res.end();
      return;
    }
    const wait = lastWrite + PROGRESS_INTERVAL_MS - Date.now();
    if (wait <= 0 && !timer) {
      write(event);
      return;
    }
    pending = event;
    timer ??= setTimeout(flush, Math.max(wait, 0));
  };
}

/**
 * Checks what can be checked at once (names, that the backup or volume is there) so that a bad
 * request fails as a request, then runs the operation as a job.
 */
async function startJob(manager: VolumeManager, jobs: JobRegistry, backups: BackupService, request: JobRequest): Promise<JobView> {
  switch (request.kind) {
    case 'backup-create': {
      await manager.get(request.volume);
      const options = {
        dest: request.dest, snapshot: request.snapshot, consistent: request.consistent, force: request.force,
        ...(request.backupKind !== undefined ? { kind: request.backupKind } : {}), ...(request.xattrs !== undefined ? { xattrs: request.xattrs } : {}),
      };
      await backups.checkRequest(request.volume, options);
      return jobs.start('backup-create', request.volume, (context) => backups.createBackup(request.volume, {
        ...context, ...options, keepSnapshot: request.keepSnapshot,
      }));
    }
    case 'restore': {
      validateVolumeName(request.name);
      await backups.inspectBackup(request.url);
      return jobs.start('restore', request.name, (context) =>
        backups.restoreVolume(request.name, request.url, { ...context, volumeOptions: request.options ?? {} }));
    }
    case 'backup-verify': {
      // Refused before a job starts: a URL that names no backup there, or (checking a whole
      // repository) a place that holds no repository.
      if (namesNoVolume(request.url)) await backups.listBackups(request.url);
      else await backups.inspectBackup(request.url);
      return jobs.start('backup-verify', request.url, (context) => backups.verifyBackup(request.url, context));
    }
    case 'backup-delete': {
      await backups.checkDelete(request.url);
      return jobs.start('backup-delete', request.url, (context) => backups.deleteBackup(request.url, context));
    }
  }
}

/** A repository's URL, naming no volume or backup (a URL that does not parse is left to inspectBackup's error). */
function namesNoVolume(url: string): boolean {
  try {
    return parseBackupUrl(url).volume === undefined;
  } catch {
    return false;
  }
}
