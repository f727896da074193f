import { Router, type Request, type Response } from 'express';
import { ErrorCodes, StowageError, isStowageError } from '../../core/errors.js';
import { httpStatusOf } from '../http-status.js';
import type { VolumeManager } from '../../core/volume-manager.js';
import { jsonBody, requireString } from '../http-body.js';

export const CONTROL_PREFIX = '/stowage/v1';


type Handler = (body: Record<string, unknown>) => Promise<object>;

function endpoint(handler: Handler) {
  return async (req: Request, res: Response) => {
    try {
      res.json(await handler(jsonBody(req)));
    } catch (err) {
      const code = isStowageError(err) ? err.code : ErrorCodes.INTERNAL;
      const message = isStowageError(err) ? err.message : `internal error: ${(err as Error).message}`;
      res.status(httpStatusOf(code)).json({ error: { code, message } });
    }
  };
}

function optionalBoolean(body: Record<string, unknown>, field: string): boolean | undefined {
  const value = body[field];
  if (value === undefined) return undefined;
  if (typeof value !== 'boolean') {
    throw new StowageError(ErrorCodes.INVALID_REQUEST, `the field "${field}" must be true or false`);
  }
  return value;
}

/** JSON API for the stowage CLI, on the same socket as the Docker protocol. */
export function controlRoutes(manager: VolumeManager): Router {
  const router = Router();
  router.post('/create', endpoint(async (body) => manager.create(requireString(body, 'name'), body.options ?? {})));
  router.post('/remove', endpoint(async (body) => manager.remove(requireString(body, 'name'), {
    keepData: optionalBoolean(body, 'keepData'),
    force: optionalBoolean(body, 'force'),
  })));
  router.post('/list', endpoint(async () => ({ volumes: await manager.list() })));
  router.post('/inspect', endpoint(async (body) => manager.get(requireString(body, 'name'))));
  router.post('/info', endpoint(async () => manager.info()));
  router.post('/snapshots/create', endpoint(async (body) =>
    manager.createSnapshot(requireString(body, 'volume'), requireString(body, 'name'))));
  router.post('/snapshots/list', endpoint(async (body) => ({ snapshots: await manager.listSnapshots(requireString(body, 'volume')) })));
  router.post('/snapshots/delete', endpoint(async (body) => {
    await manager.deleteSnapshot(requireString(body, 'volume'), requireString(body, 'name'));
    return {};
  }));
  router.post('/nodes', endpoint(async () => ({ nodes: await manager.nodes(), invalid: manager.invalidNodes() })));
  router.post('/mounts', endpoint(async () => ({ mounts: manager.mountRecords() })));
  router.post('/mounts/release', endpoint(async (body) => ({
    released: await manager.release(requireString(body, 'name'), {
      id: body.id === undefined ? undefined : requireString(body, 'id'),
      force: optionalBoolean(body, 'force'),
    }),
  })));
  router.post('/nodes/forget', endpoint(async (body) => {
    await manager.forgetNode(requireString(body, 'node'));
    return {};
  }));
  return router;
}
