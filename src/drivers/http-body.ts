import type { Request } from 'express';
import { ErrorCodes, StowageError } from '../core/errors.js';

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

export function requireString(body: Record<string, unknown>, field: string): string {
  const value = body[field];
  if (typeof value !== 'string' || value.length === 0) {
    throw new StowageError(ErrorCodes.INVALID_REQUEST, `the request needs a non-empty string field "${field}"`);
  }
  return value;
}
