import { StowageError, messageOf, type Remedy } from '../core/errors.js';
import { DEFAULT_HAND_LABEL } from '../core/mount-kinds.js';

/**
 * Who reads a failure: `cli` people at the stowage command line, `docker` people who met it
 * through a Docker command (and turn to the stowage CLI for what Docker cannot ask), `api` code
 * embedding stowage, which wants method and option names.
 */
export type Audience = 'cli' | 'docker' | 'api';

/** The backend that has each capability the core may find missing; the shells know what ships. */
const BACKEND_WITH = { snapshots: 'devicemapper' } as const;

const cli = (command: string) => `"stowage ${command}"`;

/**
 * One remedy in one audience's words, as a clause that follows the core's message after "; ".
 * `driver` is the name Docker knows this daemon by, for the Docker commands a remedy spells out.
 */
export function wordRemedy(remedy: Remedy, audience: Audience, driver = 'stowage'): string {
  switch (remedy.action) {
    case 'forget-node':
      return `if node ${remedy.node} is gone for good, ` + (audience === 'api'
        ? `call manager.forgetNode('${remedy.node}')`
        : `run ${cli(`node forget ${remedy.node}`)}`);
    case 'force-remove':
      return 'to delete anyway, ' + (audience === 'api'
        ? `call remove('${remedy.volume}', { force: true })`
        : `run ${cli(`delete ${remedy.volume} --force`)}`);
    case 'force-release':
      if (audience === 'cli') return 'add --force to release anyway';
      return 'to release anyway, ' + (audience === 'api'
        ? `call manager.release('${remedy.volume}', { force: true })`
        : `run ${cli(`release ${remedy.volume} --force`)}`);
    case 'adopt':
      if (audience === 'api') return `adopt with create('${remedy.volume}', { adopt: 'true' })`;
      if (audience === 'docker') return `adopt with "docker volume create -d ${driver} -o adopt=true ${remedy.volume}"`;
      return `adopt with ${cli(`create ${remedy.volume} --opt adopt=true`)}`;
    case 'list-nodes':
      return audience === 'api' ? 'manager.nodes() lists the nodes' : `${cli('node list')} lists the nodes`;
    case 'list-mounts':
      return audience === 'api' ? 'manager.mountRecords() lists them' : `${cli('mounts')} lists them`;
    case 'separate-root':
      return audience === 'api' ? 'or give this one its own root option' : 'or give this one its own --root';
    case 'use-backend': {
      const backend = BACKEND_WITH[remedy.capability];
      if (audience === 'api') return `the ${backend} backend can (backend: '${backend}')`;
      return `the ${backend} backend can (${cli(`daemon --backend ${backend}`)})`;
    }
    case 'cancel-jobs':
      return audience === 'api'
        ? 'abort the signal given to the call that started one to cancel it'
        : `${cli('job list')} shows the backups among them and ${cli('job cancel ID')} cancels one (a snapshot being taken ends on its own)`;
    case 'file-backup':
      return audience === 'api'
        ? `make one with createBackup('${remedy.volume}', { dest, kind: 'file' })`
        : `make one with ${cli(`backup create ${remedy.volume} --kind file --dest URL`)}`;
    case 'remove-volume':
      if (audience === 'api') return `remove it with remove('${remedy.volume}')`;
      if (audience === 'docker') return `remove it with "docker volume rm ${remedy.volume}"`;
      return `remove it with ${cli(`delete ${remedy.volume}`)}`;
    case 'hand-unmount': {
      const label = remedy.label === DEFAULT_HAND_LABEL ? '' : ` --id ${remedy.label}`;
      if (audience === 'api') return `unmount it with unmountByHand('${remedy.volume}'${label ? `, '${remedy.label}'` : ''})`;
      return `unmount it with ${cli(`umount ${remedy.volume}${label}`)}`;
    }
  }
}

/** The message followed by its remedies in the audience's words. */
export function wordFailure(message: string, remedies: readonly Remedy[], audience: Audience, driver?: string): string {
  return [message, ...remedies.map((r) => wordRemedy(r, audience, driver))].join('; ');
}

/** Anything thrown, as the audience should read it. */
export function wordError(err: unknown, audience: Audience): string {
  if (err instanceof StowageError) return wordFailure(err.message, err.remedies, audience);
  return messageOf(err);
}
