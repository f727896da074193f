/**
 * The core hands remedies over as data; each shell words them for its own users: the CLI with
 * its commands and flags, Docker's `Err` with the stowage CLI commands a Docker user runs next,
 * the embedding API with its methods and options. The CLI part needs `npm run build`.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes, createStowage, type Stowage } from '../../src/index.js';
import type { Remedy } from '../../src/core/errors.js';
import { wordRemedy, type Audience } from '../../src/drivers/remedies.js';
import {
  assertCliBuilt, killAllDaemons, makeTempDir, removeTempDir, runCli, startDaemon,
} from '../helpers/daemon-process.js';
import { CONTROL_PREFIX, controlEndpoints, knownRemedies } from '../../src/drivers/control/endpoints.js';
import { pluginCall, socketRequest } from '../helpers/plugin-client.js';
import { plantStaleNode } from '../helpers/stale-node.js';

/** Every remedy and what each audience must read in it. */
const WORDS: ReadonlyArray<[Remedy, Record<Audience, RegExp>]> = [
  [{ action: 'forget-node', node: 'n2' }, {
    cli: /run "stowage node forget n2"/, docker: /run "stowage node forget n2"/, api: /manager\.forgetNode\('n2'\)/,
  }],
  [{ action: 'force-remove', volume: 'v' }, {
    cli: /"stowage delete v --force"/, docker: /"stowage delete v --force"/, api: /remove\('v', \{ force: true \}\)/,
  }],
  [{ action: 'force-release', volume: 'v' }, {
    cli: /add --force to release anyway/, docker: /"stowage release v --force"/, api: /manager\.release\('v', \{ force: true \}\)/,
  }],
  [{ action: 'adopt', volume: 'v' }, {
    cli: /"stowage create v --opt adopt=true"/, docker: /"docker volume create -d stowage -o adopt=true v"/, api: /create\('v', \{ adopt: 'true' \}\)/,
  }],
  [{ action: 'list-nodes' }, { cli: /"stowage node list"/, docker: /"stowage node list"/, api: /manager\.nodes\(\)/ }],
  [{ action: 'list-mounts' }, { cli: /"stowage mounts"/, docker: /"stowage mounts"/, api: /manager\.mountRecords\(\)/ }],
  [{ action: 'separate-root' }, { cli: /its own --root/, docker: /its own --root/, api: /its own root option/ }],
  [{ action: 'use-backend', capability: 'snapshots' }, {
    cli: /devicemapper backend can \("stowage daemon --backend devicemapper"\)/, docker: /devicemapper backend can/,
    api: /devicemapper backend can \(backend: 'devicemapper'\)/,
  }],
  [{ action: 'cancel-jobs', volume: 'v' }, {
    cli: /"stowage job list" shows the backups among them and "stowage job cancel ID" cancels one \(a snapshot being taken ends on its own\)/, docker: /"stowage job cancel ID"/, api: /abort the signal/,
  }],
  [{ action: 'file-backup', volume: 'v' }, {
    cli: /"stowage backup create v --kind file --dest URL"/, docker: /"stowage backup create v --kind file/,
    api: /createBackup\('v', \{ dest, kind: 'file' \}\)/,
  }],
  [{ action: 'remove-volume', volume: 'v' }, {
    cli: /remove it with "stowage delete v"/, docker: /remove it with "docker volume rm v"/, api: /remove it with remove\('v'\)/,
  }],
  [{ action: 'hand-unmount', volume: 'v', label: 'cli' }, {
    cli: /unmount it with "stowage umount v"$/, docker: /unmount it with "stowage umount v"$/, api: /unmount it with unmountByHand\('v'\)$/,
  }],
  [{ action: 'hand-unmount', volume: 'v', label: 'job-7' }, {
    cli: /"stowage umount v --id job-7"/, docker: /"stowage umount v --id job-7"/, api: /unmountByHand\('v', 'job-7'\)/,
  }],
];

describe('remedies in each audience\'s words', () => {
  it.each(WORDS)('words %o for the CLI, Docker and the API', (remedy, expected) => {
    for (const audience of ['cli', 'docker', 'api'] as const) expect(wordRemedy(remedy, audience)).toMatch(expected[audience]);
    // Code reads no CLI flags: the API never names one.
    expect(wordRemedy(remedy, 'api')).not.toMatch(/--[a-z]|stowage [a-z]/);
  });
});

describe('remedies sent by the daemon', () => {
  it('are all known to the client that reads them (a remedy it drops is never worded)', () => {
    const remedies = WORDS.map(([remedy]) => remedy);
    expect(knownRemedies(remedies)).toEqual(remedies);
  });
});

describe('each shell words the remedies of a real failure', () => {
  let dir: string;
  let socket: string;
  let store: string;
  const cli = (...args: string[]) => runCli(['--socket', socket, ...args]);

  beforeAll(async () => {
    assertCliBuilt();
    dir = await makeTempDir('stowage-remedy-');
    // Docker knows a legacy plugin by its socket's name: the remedies must name that driver.
    socket = join(dir, 'remedy-drv.sock');
    store = join(dir, 'vols');
    await mkdir(store);
    await startDaemon(socket, ['--root', join(dir, 'root'), '--opt', `vfs.path=${store}`, '--opt', 'vfs.shared=true',
      '--node-id', 'remedy-node', '--docker-host', 'none']);
    await mkdir(join(store, 'legacy'));
    await writeFile(join(store, 'legacy', 'db.sqlite'), 'old data');
  });

  afterAll(async () => {
    await killAllDaemons();
    await removeTempDir(dir);
  });

  it('offers adoption as a CLI flag to the CLI and as a docker option to Docker', async () => {
    const created = await cli('create', 'legacy');
    expect(created.exitCode).toBe(1);
    expect(created.stderr).toMatch(/already holds data that belongs to no volume; .*adopt with "stowage create legacy --opt adopt=true"/);
    const docker = await pluginCall(socket, 'Create', { Name: 'legacy' });
    expect(docker.Err).toMatch(/adopt with "docker volume create -d remedy-drv -o adopt=true legacy"/);
    expect(docker.Err).not.toMatch(/--opt/);
  });

  it('names the CLI commands for a volume a dead node still references, to the CLI and to Docker', async () => {
    expect((await cli('create', 'held')).exitCode).toBe(0);
    await plantStaleNode(store, 'ghost', 'held');
    const removed = await cli('delete', 'held');
    expect(removed.exitCode).toBe(1);
    expect(removed.stderr).toMatch(/stopped sending heartbeats: ghost .*; if node ghost is gone for good, run "stowage node forget ghost"; to delete anyway, run "stowage delete held --force"/);
    const docker = await pluginCall(socket, 'Remove', { Name: 'held' });
    expect(docker.Err).toMatch(/run "stowage node forget ghost"; to delete anyway, run "stowage delete held --force"/);
    expect((await cli('delete', 'held', '--force')).exitCode).toBe(0);
  });

  it('sends remedies over the control API as data, in no audience\'s words', async () => {
    const answer = await socketRequest(socket, `${CONTROL_PREFIX}${controlEndpoints.create.path}`, { name: 'legacy' },
      { contentType: 'application/json' });
    expect(answer.status).toBe(409);
    expect(answer.json).toEqual({ error: {
      code: ErrorCodes.DATA_CONFLICT, message: expect.stringMatching(/belongs to no volume; move it away first, or adopt it as volume legacy's data$/),
      remedies: [{ action: 'adopt', volume: 'legacy' }],
    } });
  });

  it('with --json, a failure is one JSON object on stderr with code, remedies (each with its clause) and the plain line; stdout stays empty', async () => {
    expect((await cli('create', 'held-json')).exitCode).toBe(0);
    await plantStaleNode(store, 'ghost-json', 'held-json');
    const plain = await cli('delete', 'held-json');
    const removed = await cli('delete', 'held-json', '--json');
    expect(removed.exitCode).toBe(1);
    expect(removed.stdout).toBe('');
    const failure = JSON.parse(removed.stderr) as { error: { message: string; remedies: { hint: string }[]; text: string } };
    // The plain line, put together from the parts (the heartbeat's age in it moves between two calls).
    expect(failure.error.text).toBe([failure.error.message, ...failure.error.remedies.map((r) => r.hint)].join('; '));
    expect(failure).toEqual({ error: {
      code: ErrorCodes.VOLUME_IN_USE,
      kind: 'refused',
      message: expect.stringMatching(/^volume held-json is referenced by node\(s\) that stopped sending heartbeats: ghost-json /),
      remedies: [
        { action: 'forget-node', node: 'ghost-json', hint: 'if node ghost-json is gone for good, run "stowage node forget ghost-json"' },
        { action: 'force-remove', volume: 'held-json', hint: 'to delete anyway, run "stowage delete held-json --force"' },
      ],
      text: expect.any(String),
    } });
    // A command line the CLI refuses before the daemon is asked: no code, and no help text after it.
    const usage = await cli('create', 'x1', '--opt', 'size=1G', '--size', '2G', '--json');
    expect(usage.exitCode).toBe(1);
    expect(JSON.parse(usage.stderr)).toEqual({ error: {
      code: null, kind: 'usage', remedies: [], message: '--size 2G and --opt size=1G say two sizes; give one', text: '--size 2G and --opt size=1G say two sizes; give one',
    } });
    // Found by the CLI itself (a malformed --opt): said as local, with the core's code.
    expect(JSON.parse((await cli('create', 'x1', '--opt', 'novalue', '--json')).stderr)).toMatchObject({ error: { kind: 'local', code: expect.stringMatching(/^E_/) } });
    // Nothing listening: unreachable, no code.
    const away = await runCli(['--socket', join(dir, 'nobody.sock'), 'list', '--json']);
    expect(away.exitCode).toBe(1);
    expect(JSON.parse(away.stderr)).toMatchObject({ error: { code: null, kind: 'unreachable', message: expect.stringContaining('nobody.sock') } });
    // Without --json, the same failure stays one plain line.
    expect(plain.stderr).toMatch(/^stowage: volume held-json is referenced/);
    expect((await cli('delete', 'held-json', '--force')).exitCode).toBe(0);
  });

  it('points the CLI at the list of mounts when a release names none', async () => {
    const released = await cli('release', 'nothing-here');
    expect(released.exitCode).toBe(1);
    expect(released.stderr).toMatch(/no mount records of volume nothing-here; "stowage mounts" lists them/);
  });
});

describe('the embedding API words remedies with its own methods and options', () => {
  const dirs: string[] = [];
  const open: Stowage[] = [];
  afterEach(async () => {
    await Promise.all(open.splice(0).map((s) => s.close()));
    await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
  });

  async function stowageIn(): Promise<{ stowage: Stowage; store: string }> {
    const dir = await mkdtemp(join(tmpdir(), 'stowage-api-remedy-'));
    dirs.push(dir);
    const store = join(dir, 'volumes');
    await mkdir(store);
    const stowage = await createStowage({ options: { 'vfs.path': store, 'vfs.shared': 'true' }, root: join(dir, 'state'), nodeId: 'api-node' });
    open.push(stowage);
    return { stowage, store };
  }

  it('offers adoption as the create option, keeping code and remedies', async () => {
    const { stowage, store } = await stowageIn();
    await mkdir(join(store, 'legacy'));
    await writeFile(join(store, 'legacy', 'db.sqlite'), 'old data');
    await expect(stowage.create('legacy')).rejects.toMatchObject({
      code: ErrorCodes.DATA_CONFLICT, volume: 'legacy', remedies: [{ action: 'adopt', volume: 'legacy' }],
      message: expect.stringMatching(/adopt with create\('legacy', \{ adopt: 'true' \}\)$/),
    });
    expect((await stowage.create('legacy', { adopt: 'true' })).volume.adopted).toBe(true);
  });

  it('offers remove with force for a volume a dead node references, and remove with force deletes it', async () => {
    const { stowage, store } = await stowageIn();
    await stowage.create('held');
    await plantStaleNode(store, 'ghost', 'held');
    const err = await stowage.remove('held').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCodes.VOLUME_IN_USE });
    expect((err as Error).message).toMatch(/call manager\.forgetNode\('ghost'\); to delete anyway, call remove\('held', \{ force: true \}\)$/);
    expect((err as Error).message).not.toMatch(/--force|stowage delete/);
    expect(await stowage.list()).toHaveLength(1);
    await stowage.remove('held', { force: true });
    expect(await stowage.list()).toEqual([]);
  });
});
