/**
 * Scrapes a daemon's metrics endpoint on a unix socket (`--metrics unix:PATH`) and reads the
 * exposition text as samples, for tests that check values after real operations.
 */
import { expect } from 'vitest';
import { socketRequest } from './plugin-client.js';

export type Samples = Map<string, number>;

/** The exposition text as `name{labels}` -> value (labels as Prometheus prints them). */
export function parseExposition(text: string): Samples {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}

/** GET /metrics on the socket; asserts a 200 in Prometheus' text format. */
export async function scrapeMetrics(metricsSocket: string): Promise<Samples> {
  const reply = await socketRequest(metricsSocket, '/metrics', undefined, { method: 'GET', timeoutMs: 30_000 });
  expect(reply.status).toBe(200);
  expect(reply.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
  return parseExposition(reply.text);
}

/** One sample's value; fails naming the sample when the scrape lacks it. */
export function sample(samples: Samples, key: string): number {
  expect(samples.has(key), `${key} not in the scrape`).toBe(true);
  return samples.get(key)!;
}
