import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { silentLogger, type Logger } from '../../src/core/logger.js';
import { serveMetrics, type MetricsAddress } from '../../src/drivers/metrics/metrics-server.js';
import type { StowageMetrics } from '../../src/drivers/metrics/metrics.js';

/** Only what serveMetrics reads of the metrics: the warning is about where they are served, not what they hold. */
const metrics = { contentType: 'text/plain', text: () => Promise.resolve('stowage_up 1\n') } as unknown as StowageMetrics;

function warningsOf(): Logger & { warnings: string[] } {
  const warnings: string[] = [];
  return { ...silentLogger, warnings, warn: (m: string) => { warnings.push(m); } };
}

async function served(host: string): Promise<{ warnings: string[]; body: string }> {
  const log = warningsOf();
  // Port 0: any free port (the flag's parser asks for 1-65535; the server takes what it is given).
  const address: MetricsAddress = { kind: 'tcp', host, port: 0 };
  const server = await serveMetrics(metrics, address, log);
  try {
    const { port } = server.server.address() as AddressInfo;
    const body = await new Promise<string>((resolve, reject) => {
      request({ host: '127.0.0.1', port, path: '/metrics' }, (res) => {
        let text = '';
        res.on('data', (d) => { text += String(d); }).on('end', () => resolve(text));
      }).on('error', reject).end();
    });
    return { warnings: log.warnings, body };
  } finally {
    await server.close();
  }
}

describe('metrics served over TCP', () => {
  it('warn when every machine that reaches the address can read them, and not on loopback', async () => {
    const open = await served('0.0.0.0');
    expect(open.body).toBe('stowage_up 1\n');
    expect(open.warnings).toEqual([expect.stringMatching(/^metrics are served on 0\.0\.0\.0:0 without authentication .*firewall the port/)]);
    for (const host of ['127.0.0.1']) {
      const local = await served(host);
      expect(local.body).toBe('stowage_up 1\n');
      expect(local.warnings).toEqual([]);
    }
  });
});
