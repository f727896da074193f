/**
 * Pure classification of dmsetup failures. dmsetup exits 1 and prints, for ioctl failures,
 * `device-mapper: <ioctl> ioctl on <device> [(<major>:<minor>)] failed: <strerror>` then `Command failed.`; for a
 * missing device on status/info/table it prints `Device does not exist.`
 */

export type DmFailureKind =
  /** The kernel has no device-mapper driver (/dev/mapper/control cannot be opened). */
  | 'no-kernel'
  /** EEXIST: thin id taken (message create_thin/create_snap), or device name taken. */
  | 'exists'
  /** ENODATA: thin id absent (delete, create_snap origin, thin table load). */
  | 'no-data'
  /** EBUSY: device open/mounted (remove), name in use (create), metadata snap already held. */
  | 'busy'
  /** ENXIO / "Device does not exist.": no such device-mapper device. */
  | 'no-device'
  /** EINVAL: wrong transaction id, no metadata snap to release, bad table. */
  | 'invalid'
  /** EOPNOTSUPP: the pool is read-only or failed and refuses messages. */
  | 'not-supported'
  /** ENOSPC */
  | 'no-space'
  | 'other';

export interface DmFailure {
  kind: DmFailureKind;
  /** The ioctl that failed (`create`, `reload`, `remove`, `message`, `suspend`, ...), when dmsetup named it. */
  ioctl?: string;
  device?: string;
  /** The system error text, e.g. `File exists`. */
  reason: string;
}

const REASONS: ReadonlyArray<[RegExp, DmFailureKind]> = [
  [/^File exists$/i, 'exists'],
  [/^No data available$/i, 'no-data'],
  [/^Device or resource busy$/i, 'busy'],
  [/^No such device or address$/i, 'no-device'],
  [/^No such device$/i, 'no-device'],
  [/^Invalid argument$/i, 'invalid'],
  [/^Operation not supported$/i, 'not-supported'],
  [/^No space left on device$/i, 'no-space'],
];

function kindOf(reason: string): DmFailureKind {
  return REASONS.find(([pattern]) => pattern.test(reason))?.[1] ?? 'other';
}

/** Classifies dmsetup's stderr; never throws. */
export function parseDmError(stderr: string): DmFailure {
  const lines = stderr.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  if (lines.some((l) => /^Failure to communicate with kernel device-mapper driver/.test(l))) {
    return { kind: 'no-kernel', reason: 'the kernel has no device-mapper driver (/dev/mapper/control cannot be opened)' };
  }
  for (const line of lines) {
    // The device may be followed by its number: `reload ioctl on ghost (254:1) failed: ...`.
    const match = /^device-mapper: (\S+) ioctl on (\S*)(?: \(\d+:\d+\))?\s+failed: (.+)$/.exec(line);
    if (match) {
      const reason = match[3]!.trim();
      return { kind: kindOf(reason), ioctl: match[1]!, ...(match[2] ? { device: match[2] } : {}), reason };
    }
  }
  if (lines.some((l) => /^Device does not exist\.?$/i.test(l))) return { kind: 'no-device', reason: 'Device does not exist' };
  const meaningful = lines.find((l) => l !== 'Command failed.' && l !== 'Command failed') ?? lines[0] ?? 'unknown error';
  return { kind: 'other', reason: meaningful };
}
