import { ErrorCodes, StowageError } from './errors.js';

/**
 * Mount records stowage makes itself, not Docker. No container accounts for them, so
 * reconciliation with the engine leaves them alone: a restore's would otherwise be dropped (and
 * its volume detached) mid-restore once the grace period passed, and a hand mount would last
 * only that long.
 */

/** The mount id a restore mounts its new volume under; a record with it outlives a killed daemon. */
export const RESTORE_MOUNT_PREFIX = 'stowage-restore-';

/** A mount asked for by a person or a program, kept until it is unmounted the same way. */
export const HAND_MOUNT_PREFIX = 'stowage-hand-';

/** The label a hand mount has when none is given. */
export const DEFAULT_HAND_LABEL = 'cli';

const HAND_LABEL = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** Whether a record may have come from Docker (the engine can account for it), as opposed to stowage itself. */
export function isEngineMountId(id: string): boolean {
  return !id.startsWith(RESTORE_MOUNT_PREFIX) && !id.startsWith(HAND_MOUNT_PREFIX);
}

export function isHandMountId(id: string): boolean {
  return id.startsWith(HAND_MOUNT_PREFIX);
}

/**
 * Refuses, at the door of Docker's Mount and Unmount and of the embedding API's, an id stowage
 * keeps for its own mounts: a Mount under a restore's prefix would pass as the restore and
 * reach its partial data, an Unmount under one would end the restore's or a hand mount.
 */
export function assertOutsideMountId(id: string): void {
  if (isEngineMountId(id)) return;
  throw new StowageError(ErrorCodes.INVALID_REQUEST,
    `mount id ${JSON.stringify(id.slice(0, 80))} is refused: ids beginning ${RESTORE_MOUNT_PREFIX} or ${HAND_MOUNT_PREFIX} ` +
    'are kept for stowage\'s own mounts (a restore\'s, a mount by hand)');
}

/**
 * Refuses a new hand mount's label that begins as stowage's own ids do: it is most likely an id
 * copied whole (`stowage-hand-job`). Unmounting takes any label, so one made before this rule
 * can still be ended.
 */
export function assertNewHandLabel(label: unknown): void {
  if (typeof label === 'string' && label.startsWith('stowage-')) {
    throw new StowageError(ErrorCodes.INVALID_NAME,
      `invalid mount label ${JSON.stringify(label.slice(0, 80))}: a hand mount's id is ${HAND_MOUNT_PREFIX}LABEL; give LABEL alone`);
  }
}

/** The mount id of a hand mount with this label; several holders use several labels. */
export function handMountId(label: unknown = DEFAULT_HAND_LABEL): string {
  if (typeof label !== 'string' || !HAND_LABEL.test(label)) {
    const shown = typeof label === 'string' ? JSON.stringify(label.slice(0, 80)) : String(label);
    throw new StowageError(ErrorCodes.INVALID_NAME,
      `invalid mount label ${shown}: use up to 63 letters, digits, "_", "." and "-", starting with a letter or digit`);
  }
  return `${HAND_MOUNT_PREFIX}${label}`;
}

/** The label of a hand mount's id. */
export function handLabelOf(id: string): string {
  return id.slice(HAND_MOUNT_PREFIX.length);
}
