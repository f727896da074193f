/**
 * Pure parsers for `gluster --mode=script --xml ...` output (gluster 10). Every reply is a
 * `<cliOutput>` envelope whose `<opRet>` says whether the operation worked: the exit code is 0
 * either way, and failures have been seen with opRet -1 and -2, so anything but 0 is a failure.
 * `opErrno` is not a reliable discriminator; `opErrstr` is the human reason.
 */
import { ErrorCodes, StowageError } from '../../core/errors.js';
import { childOf, childrenOf, parseXml, pathOf, textOf, XmlError, type XmlElement } from './xml.js';

export interface GlusterReply {
  ok: boolean;
  opRet: number;
  opErrno: number;
  /** gluster's reason on failure ('' on success; some successes carry a warning here). */
  opErrstr: string;
  /** The `<cliOutput>` element. */
  root: XmlElement;
}

function malformed(what: string, cause?: unknown): StowageError {
  return new StowageError(ErrorCodes.BACKEND_COMMAND, `gluster printed output stowage cannot read (${what})`, { cause });
}

function int(value: string | undefined): number | undefined {
  if (value === undefined || !/^-?\d+$/.test(value)) return undefined;
  return Number(value);
}

export function parseReply(xml: string): GlusterReply {
  let root: XmlElement;
  try {
    root = parseXml(xml);
  } catch (err) {
    throw malformed(err instanceof XmlError ? err.message : 'not XML', err);
  }
  const opRet = int(textOf(root, 'opRet'));
  if (root.name !== 'cliOutput' || opRet === undefined) throw malformed('no <cliOutput> with an <opRet>');
  return { ok: opRet === 0, opRet, opErrno: int(textOf(root, 'opErrno')) ?? 0, opErrstr: textOf(root, 'opErrstr') ?? '', root };
}

/** What a non-XML reply (exit code 1, text on stdout or stderr) means. */
export type CliTextKind = 'glusterd-unreachable' | 'timeout' | 'usage' | 'unknown';

export function classifyCliText(text: string): CliTextKind {
  if (/Connection failed\. Please check if gluster daemon is operational/i.test(text)) return 'glusterd-unreachable';
  if (/Request timed out/i.test(text)) return 'timeout';
  if (/^Usage:/m.test(text) || /should not contain|can only ?contain|Please provide a valid/i.test(text)) return 'usage';
  return 'unknown';
}

export interface GlusterBrick {
  host: string;
  path: string;
  /** UUID of the peer that hosts the brick (compare with the local peer from `pool list`). */
  hostUuid: string;
  isArbiter: boolean;
}

export interface GlusterVolume {
  name: string;
  id: string;
  /** `Created`, `Started` or `Stopped`. */
  status: string;
  started: boolean;
  /** `Distribute`, `Replicate`, `Disperse`, `Distributed-Replicate`, ... */
  type: string;
  brickCount: number;
  replicaCount: number;
  disperseCount: number;
  redundancyCount: number;
  bricks: GlusterBrick[];
  /** Reconfigured options, e.g. `features.quota` or stowage's own `user.stowage.*`. */
  options: Record<string, string>;
}

/** Splits `host:/path` (the host may be an IPv6 literal in brackets). */
export function splitBrick(spec: string): { host: string; path: string } | undefined {
  const at = spec.indexOf(':/');
  if (at <= 0) return undefined;
  return { host: spec.slice(0, at), path: spec.slice(at + 1) };
}

function parseBrick(element: XmlElement): GlusterBrick {
  const name = textOf(element, 'name') ?? element.text;
  const split = splitBrick(name);
  if (!split) throw malformed(`brick ${JSON.stringify(name)} is not host:/path`);
  return {
    ...split,
    hostUuid: textOf(element, 'hostUuid') ?? element.attributes.uuid ?? '',
    isArbiter: textOf(element, 'isArbiter') === '1',
  };
}

/** `volume info [NAME]`: every volume described, in gluster's order. */
export function parseVolumeInfo(root: XmlElement): GlusterVolume[] {
  const volumes = pathOf(root, 'volInfo', 'volumes');
  if (!volumes) throw malformed('volume info without <volInfo><volumes>');
  return childrenOf(volumes, 'volume').map((v) => {
    const name = textOf(v, 'name');
    if (!name) throw malformed('a volume without a name');
    const options: Record<string, string> = {};
    for (const option of childrenOf(childOf(v, 'options') ?? v, 'option')) {
      const key = textOf(option, 'name');
      if (key) options[key] = textOf(option, 'value') ?? '';
    }
    const status = textOf(v, 'statusStr') ?? 'unknown';
    return {
      name,
      id: textOf(v, 'id') ?? '',
      status,
      started: status === 'Started',
      type: textOf(v, 'typeStr') ?? 'unknown',
      brickCount: int(textOf(v, 'brickCount')) ?? 0,
      replicaCount: int(textOf(v, 'replicaCount')) ?? 1,
      disperseCount: int(textOf(v, 'disperseCount')) ?? 0,
      redundancyCount: int(textOf(v, 'redundancyCount')) ?? 0,
      bricks: childrenOf(childOf(v, 'bricks') ?? v, 'brick').map(parseBrick),
      options,
    };
  });
}

/** `volume list`: volume names. */
export function parseVolumeList(root: XmlElement): string[] {
  const list = childOf(root, 'volList');
  if (!list) throw malformed('volume list without <volList>');
  return childrenOf(list, 'volume').map((v) => v.text);
}

export interface ProcessStatus {
  /** Brick host, or the daemon's name (`Self-heal Daemon`, `Quota Daemon`, ...). */
  host: string;
  /** Brick path; daemons have none. */
  path?: string;
  online: boolean;
  port?: number;
  pid?: number;
}

export interface GlusterVolumeStatus {
  name: string;
  bricks: ProcessStatus[];
  daemons: ProcessStatus[];
}

/** `volume status NAME` (a stopped volume is an opRet failure, not an empty status). */
export function parseVolumeStatus(root: XmlElement): GlusterVolumeStatus[] {
  const volumes = pathOf(root, 'volStatus', 'volumes');
  if (!volumes) throw malformed('volume status without <volStatus><volumes>');
  return childrenOf(volumes, 'volume').map((v) => {
    const status: GlusterVolumeStatus = { name: textOf(v, 'volName') ?? '', bricks: [], daemons: [] };
    for (const node of childrenOf(v, 'node')) {
      const path = textOf(node, 'path') ?? '';
      const entry: ProcessStatus = {
        host: textOf(node, 'hostname') ?? '',
        online: textOf(node, 'status') === '1',
        port: int(textOf(node, 'port')),
        pid: int(textOf(node, 'pid')),
      };
      // Bricks have an absolute path; daemons report their host ("localhost") in <path>.
      if (path.startsWith('/')) status.bricks.push({ ...entry, path });
      else status.daemons.push(entry);
    }
    return status;
  });
}

export interface QuotaUsage {
  path: string;
  /** Hard limit in bytes; undefined when the directory has no limit ("N/A"). */
  hardLimit?: number;
  softLimitPercent?: string;
  usedBytes?: number;
  availableBytes?: number;
  softLimitExceeded?: boolean;
  hardLimitExceeded?: boolean;
}

function yesNo(value: string | undefined): boolean | undefined {
  return value === 'Yes' ? true : value === 'No' ? false : undefined;
}

/**
 * `volume quota VOL list PATH...`: one entry per path that exists. A missing path yields no
 * entry (gluster prints the error as text, not in the XML).
 */
export function parseQuotaList(root: XmlElement): QuotaUsage[] {
  const quota = childOf(root, 'volQuota');
  if (!quota) throw malformed('quota list without <volQuota>');
  return childrenOf(quota, 'limit').map((limit) => {
    const soft = textOf(limit, 'soft_limit_percent');
    return {
      path: textOf(limit, 'path') ?? '',
      hardLimit: int(textOf(limit, 'hard_limit')),
      softLimitPercent: soft === 'N/A' ? undefined : soft,
      usedBytes: int(textOf(limit, 'used_space')),
      availableBytes: int(textOf(limit, 'avail_space')),
      softLimitExceeded: yesNo(textOf(limit, 'sl_exceeded')),
      hardLimitExceeded: yesNo(textOf(limit, 'hl_exceeded')),
    };
  });
}

export interface GlusterPeer {
  uuid: string;
  /** `localhost` for the peer the CLI talks to. */
  hostname: string;
  connected: boolean;
}

/** `pool list`: every peer of the trusted pool, this one as `localhost`. */
export function parsePoolList(root: XmlElement): GlusterPeer[] {
  const peers = childOf(root, 'peerStatus');
  if (!peers) throw malformed('pool list without <peerStatus>');
  return childrenOf(peers, 'peer').map((p) => ({
    uuid: textOf(p, 'uuid') ?? '',
    hostname: textOf(p, 'hostname') ?? '',
    connected: textOf(p, 'connected') === '1',
  }));
}

/**
 * A quota timeout as set on the volume (`features.soft-timeout` / `features.hard-timeout`), in
 * seconds; undefined when it was never set (gluster's default applies) or is written in a
 * form other than plain seconds, so that the caller sets it again rather than guess.
 */
export function quotaTimeoutOf(volume: GlusterVolume, kind: 'soft-timeout' | 'hard-timeout'): number | undefined {
  const match = /^(\d{1,4})\s*(?:s|sec)?$/i.exec(volume.options[`features.${kind}`] ?? '');
  return match ? Number(match[1]) : undefined;
}
