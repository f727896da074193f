import { Router, type Request, type Response } from 'express';
import { ErrorCodes, isStowageError } from '../../core/errors.js';
import type { VolumeInfo, VolumeManager } from '../../core/volume-manager.js';
import { jsonBody, requireString } from '../http-body.js';

type Handler = (body: Record<string, unknown>) => Promise<object> | object;

/** Docker reads failures from `Err`; the message is the core's, written for the person at the CLI. */
function endpoint(handler: Handler) {
  return async (req: Request, res: Response) => {
    try {
      res.json(await handler(jsonBody(req)));
    } catch (err) {
      const message = isStowageError(err) ? err.message : `internal error: ${(err as Error).message}`;
      res.status(500).json({ Err: message });
    }
  };
}

function dockerVolume(info: VolumeInfo): Record<string, unknown> {
  return {
    Name: info.name,
    ...(info.mountpoint ? { Mountpoint: info.mountpoint } : {}),
    CreatedAt: info.createdAt,
    Status: info.status,
  };
}

/** The legacy volume plugin protocol (docker.volumedriver/1.0), all eight methods. */
export function dockerPluginRoutes(manager: VolumeManager): Router {
  const router = Router();
  router.post('/Plugin.Activate', endpoint(() => ({ Implements: ['VolumeDriver'] })));
  router.post('/VolumeDriver.Create', endpoint(async (body) => {
    await manager.create(requireString(body, 'Name'), body.Opts ?? {});
    return {};
  }));
  router.post('/VolumeDriver.Remove', endpoint(async (body) => {
    try {
      await manager.remove(requireString(body, 'Name'));
    } catch (err) {
      // Docker keeps its own record until Remove succeeds; a volume already gone (removed on
      // another node, say) must not leave an entry in Docker that can never be removed.
      if (!isStowageError(err, ErrorCodes.VOLUME_NOT_FOUND)) throw err;
    }
    return {};
  }));
  router.post('/VolumeDriver.Mount', endpoint(async (body) => ({
    Mountpoint: await manager.mount(requireString(body, 'Name'), requireString(body, 'ID')),
  })));
  router.post('/VolumeDriver.Unmount', endpoint(async (body) => {
    await manager.unmount(requireString(body, 'Name'), requireString(body, 'ID'));
    return {};
  }));
  router.post('/VolumeDriver.Path', endpoint(async (body) => {
    const name = requireString(body, 'Name');
    await manager.get(name);
    return { Mountpoint: manager.path(name) ?? '' };
  }));
  router.post('/VolumeDriver.Get', endpoint(async (body) => ({
    Volume: dockerVolume(await manager.get(requireString(body, 'Name'))),
  })));
  router.post('/VolumeDriver.List', endpoint(async () => ({
    Volumes: (await manager.listBrief()).map((v) => ({
      Name: v.name, CreatedAt: v.createdAt, ...(v.mountpoint ? { Mountpoint: v.mountpoint } : {}),
    })),
  })));
  router.post('/VolumeDriver.Capabilities', endpoint(() => ({ Capabilities: { Scope: manager.scope } })));
  return router;
}
