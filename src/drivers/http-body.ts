import type { IncomingMessage } from 'node:http';
import type { Request } from 'express';
import { ErrorCodes, StowageError } from '../core/errors.js';

/**
 * Largest request body either protocol accepts (the plugin dispatcher and express's raw parser
 * alike): Docker's requests are a few hundred bytes, the CLI's a few more.
 */
export const MAX_BODY_BYTES = 1024 * 1024;

export function bodyTooLarge(): StowageError {
  return new StowageError(ErrorCodes.INVALID_REQUEST, `bad request: the body exceeds ${MAX_BODY_BYTES} bytes`);
}

/** Reads a plugin request's body, refusing more than MAX_BODY_BYTES without buffering it. */
export function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(bodyTooLarge());
        req.resume();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/**
 * Docker sends JSON without a Content-Type, so bodies arrive raw and are parsed here whatever
 * their declared type. An empty body means an empty request object.
 */
export function jsonBody(req: Request): Record<string, unknown> {
  const raw: unknown = req.body;
  return parseJsonBody(Buffer.isBuffer(raw) ? raw : Buffer.from(typeof raw === 'string' ? raw : ''));
}

export function parseJsonBody(raw: Buffer): Record<string, unknown> {
  const text = raw.toString('utf8');
  if (text.trim() === '') return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new StowageError(ErrorCodes.INVALID_REQUEST, 'the request body is not valid JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new StowageError(ErrorCodes.INVALID_REQUEST, 'the request body must be a JSON object');
  }
  return parsed as Record<string, unknown>;
}

/** The one wording for a missing or empty string field, in plugin and control requests alike. */
export function needsStringField(field: string): string {
  return `the request needs a non-empty string field "${field}"`;
}

export function requireString(body: Record<string, unknown>, field: string): string {
  const value = body[field];
  if (typeof value !== 'string' || value.length === 0) {
    throw new StowageError(ErrorCodes.INVALID_REQUEST, needsStringField(field));
  }
  return value;
}
