/**
 * A volume plugin that keeps volumes in a map and does nothing else: the engine's own cost of
 * going through a plugin, the floor under any plugin's figure in section 1a. It speaks the same
 * protocol as stowage (Activate, Capabilities, Create, Get, List, Remove) on a socket in the
 * node's plugin directory, so the engine discovers it as `stowage-null`.
 */
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';

export const NULL_DRIVER = 'stowage-null';

export async function startNullPlugin(pluginsDir: string): Promise<{ close(): Promise<void> }> {
  const volumes = new Map<string, string>();
  const server: Server = createServer((req, res) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => { text += chunk; });
    req.on('end', () => {
      let body: { Name?: unknown } = {};
      try { body = text === '' ? {} : JSON.parse(text) as { Name?: unknown }; } catch { /* answered below */ }
      const name = typeof body.Name === 'string' ? body.Name : '';
      let answer: object;
      switch (req.url) {
        case '/Plugin.Activate': answer = { Implements: ['VolumeDriver'] }; break;
        case '/VolumeDriver.Capabilities': answer = { Capabilities: { Scope: 'local' } }; break;
        case '/VolumeDriver.Create': volumes.set(name, new Date().toISOString()); answer = {}; break;
        case '/VolumeDriver.Remove': answer = volumes.delete(name) ? {} : { Err: `no volume ${name}` }; break;
        case '/VolumeDriver.Get': {
          const createdAt = volumes.get(name);
          answer = createdAt ? { Volume: { Name: name, CreatedAt: createdAt, Status: {} } } : { Err: `no volume ${name}` };
          break;
        }
        case '/VolumeDriver.List': answer = { Volumes: [...volumes].map(([Name, CreatedAt]) => ({ Name, CreatedAt })) }; break;
        default: answer = { Err: `${req.url ?? ''} is not supported` };
      }
      const reply = JSON.stringify(answer);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(reply) });
      res.end(reply);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(join(pluginsDir, `${NULL_DRIVER}.sock`), resolve);
  });
  return { close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}
