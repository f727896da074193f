import { Router } from 'express';
import type { VolumeManager } from '../../core/volume-manager.js';
import { jsonBody } from '../http-body.js';
import { failureOf } from '../http-status.js';
import {
  controlEndpoints as api, controlErrorBody, parseRequest,
  type ControlEndpoint, type ResponseOf, type ValidRequestOf,
} from './endpoints.js';

/** JSON API for the stowage CLI, on the same socket as the Docker protocol. */
export function controlRoutes(manager: VolumeManager): Router {
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
  serve(api.create, (r) => manager.create(r.name, r.options ?? {}));
  serve(api.remove, (r) => manager.remove(r.name, { retain: r.retain, force: r.force }));
  serve(api.list, async () => ({ volumes: await manager.list() }));
  serve(api.inspect, (r) => manager.get(r.name));
  serve(api.info, () => manager.info());
  serve(api.createSnapshot, (r) => manager.createSnapshot(r.volume, r.name));
  serve(api.listSnapshots, async (r) => ({ snapshots: await manager.listSnapshots(r.volume) }));
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
  return router;
}
