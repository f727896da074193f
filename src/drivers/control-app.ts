import express, { type Router } from 'express';
import { CONTROL_PREFIX, controlErrorBody } from './control/endpoints.js';
import { MAX_BODY_BYTES } from './http-body.js';
import { bodyParserFailure, unknownRoute, type HttpFailure } from './http-status.js';

/** Express for the control API and unknown paths; loaded by createApp (server.ts) on first use. */
export function controlApp(control: Router): express.Express {
  const app = express();
  app.disable('x-powered-by');
  // Docker never revalidates; hashing every answer (List can be large) is pure cost.
  app.set('etag', false);
  // Raw for every content type: Docker sends JSON with no Content-Type header.
  app.use(express.raw({ type: () => true, limit: MAX_BODY_BYTES }));
  app.use(CONTROL_PREFIX, control);
  // Each protocol answers failures in its own shape: Docker reads `Err`, the CLI reads `error`.
  const fail = (req: express.Request, res: express.Response, failure: HttpFailure) => {
    res.status(failure.status).json(req.path.startsWith(CONTROL_PREFIX) ? controlErrorBody(failure) : { Err: failure.message });
  };
  app.use((req, res) => fail(req, res, unknownRoute(req.method, req.path)));
  // Body parser failures (such as an over-long body) reach here.
  app.use((err: Error, req: express.Request, res: express.Response, _next: express.NextFunction) => {
    fail(req, res, bodyParserFailure(err));
  });
  return app;
}
