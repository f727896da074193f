/**
 * `stowage doctor` on a real node: a private engine in its own namespaces (a Swarm of one), the
 * daemon as a legacy plugin there. Healthy, it exits 0; a leaked mount record is named with its
 * way out; with the engine stopped it fails saying how to start it.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_PATH, assertCliBuilt, makeTempDir, removeTempDir, runCli } from '../helpers/daemon-process.js';
import { startDockerNode, stopAll, type DockerNode } from '../helpers/docker-node.js';
import { pluginCall } from '../helpers/plugin-client.js';
import { checkDocker, systemSuite } from '../helpers/requirements.js';
import { startStowageInNode, type StowageInNode } from '../helpers/stowage-in-node.js';

const skip = systemSuite('docker', checkDocker());

interface Check { check: string; status: string; message: string; advice?: string }
interface Report { exitStatus: number; checks: Check[] }

describe.skipIf(skip)('stowage doctor against a real engine', { timeout: 300_000 }, () => {
  let node: DockerNode;
  let stowage: StowageInNode;
  let tmp: string;
  let daemonOptions: string[];

  /** Doctor as an operator runs it on the node: inside its namespaces, with the daemon's options. */
  const doctor = async (extra: string[] = []): Promise<{ exitCode: number; report: Report; text: string }> => {
    const run = (json: string[]) => node.execInNamespace([process.execPath, CLI_PATH, 'doctor', ...json, ...daemonOptions, ...extra],
      { reject: false, timeoutMs: 90_000 });
    const json = await run(['--json']);
    const text = await run([]);
    return { exitCode: json.exitCode, report: JSON.parse(json.stdout) as Report, text: text.stdout };
  };
  const check = (report: Report, name: string) => report.checks.find((c) => c.check === name);

  beforeAll(async () => {
    assertCliBuilt();
    tmp = await makeTempDir('stowage-doctor-e2e-');
    // A network namespace of its own: Swarm's ports stay private to this test.
    node = await startDockerNode({ name: 'doctor', network: true });
    daemonOptions = ['--root', join(node.dir, 'stowage-root'), '--node-id', 'doc-node', '--docker-host', node.dockerHost,
      '--mount-grace', '1', '--reconcile-interval', '3600'];
    stowage = await startStowageInNode(node, { args: daemonOptions.slice(2) });
    await node.docker(['swarm', 'init', '--advertise-addr', '127.0.0.1']);
  });
  afterAll(async () => {
    await stopAll();
    await removeTempDir(tmp);
  });

  it('finds a healthy set-up healthy and exits 0', async () => {
    // The daemon has the engine activate the plugin at start; wait until the engine reports it.
    await expect.poll(async () => (await node.docker(['info', '--format', '{{json .Plugins.Volume}}'])).stdout,
      { timeout: 30_000, interval: 500 }).toContain('"stowage"');
    const { exitCode, report, text } = await doctor();
    expect(report.checks.filter((c) => c.status !== 'ok' && c.status !== 'skip')).toEqual([]);
    expect(exitCode).toBe(0);
    expect(report.exitStatus).toBe(0);
    expect(check(report, 'daemon')?.message).toMatch(/answers \(node doc-node, backend vfs, scope local\)/);
    expect(check(report, 'socket')?.message).toBe('/run/docker/plugins/stowage.sock has mode 0600, owner uid 0');
    expect(check(report, 'engine')?.message).toMatch(new RegExp(`the Docker engine at ${node.dir}/docker.sock answers \\(version 2`));
    expect(check(report, 'driver')).toMatchObject({ status: 'ok', message: 'the engine has activated volume driver stowage' });
    expect(check(report, 'swarm')).toMatchObject({ status: 'ok', message: 'Swarm sees volume driver stowage on this node' });
    expect(check(report, 'store-sharing')?.status).toBe('ok');
    expect(check(report, 'nodes')).toMatchObject({ status: 'ok', message: 'no other node has a record' });
    expect(check(report, 'clock')).toMatchObject({ status: 'ok', message: expect.stringMatching(/doc-node \(this node\) [+-]\d+\.\d s/) });
    expect(check(report, 'mount-records')).toMatchObject({ status: 'ok', message: 'no mount records on this node' });
    expect(text.split('\n').filter((l) => l.startsWith('ok '))).toHaveLength(report.checks.filter((c) => c.status === 'ok').length);
  });

  it('names a leaked mount record and how to release it; a running container\'s mount is not one', async () => {
    await node.docker(['volume', 'create', '-d', 'stowage', 'leaky']);
    await node.docker(['run', '-d', '--name', 'user', '--network', 'none', '-v', 'inuse:/data', '--volume-driver', 'stowage',
      node.image, 'sleep', '600']);
    // A Mount whose answer Docker never used (the engine died mid-Mount): no container behind it.
    expect((await pluginCall(stowage.socket, 'Mount', { Name: 'leaky', ID: 'lost-mount' })).Err).toBeUndefined();
    await new Promise((resolve) => setTimeout(resolve, 1_500)); // past --mount-grace 1
    const { exitCode, report } = await doctor();
    expect(check(report, 'mount-records')).toMatchObject({
      status: 'warn',
      message: 'leaked mount records: no live container on this node uses leaky (lost-mount) (mounted more than 1 s ago)',
      advice: expect.stringMatching(/^stowage release leaky \(until then those records keep the volume attached and its removal refused/),
    });
    // A warning: nothing fails, so the exit status stays 0, unless --strict.
    expect(exitCode).toBe(0);
    expect((await doctor(['--strict'])).exitCode).toBe(1);
    // The advice works, and doctor agrees afterwards.
    const released = await runCli(['--socket', stowage.socket, 'release', 'leaky']);
    expect(released.stdout.trim()).toBe('leaky lost-mount (1)');
    expect(check((await doctor()).report, 'mount-records')).toMatchObject({
      status: 'ok', message: '1 mount record(s), each accounted for by a live container',
    });
    // A hand mount is no leak, however old, though no container uses it.
    expect((await runCli(['--socket', stowage.socket, 'mount', 'leaky'])).exitCode).toBe(0);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(check((await doctor()).report, 'mount-records')).toMatchObject({
      status: 'ok', message: '2 mount record(s), each accounted for by a live container, or held by stowage itself (1: by hand or by a restore)',
    });
    // A leak beside a hand mount: the advised release drops the leak and leaves the hand mount.
    expect((await pluginCall(stowage.socket, 'Mount', { Name: 'leaky', ID: 'lost-again' })).Err).toBeUndefined();
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(check((await doctor()).report, 'mount-records')?.advice).toMatch(/^stowage release leaky \(/);
    expect((await runCli(['--socket', stowage.socket, 'release', 'leaky'])).stdout.trim()).toBe('leaky lost-again (1)');
    const handOnly = await runCli(['--socket', stowage.socket, 'release', 'leaky']);
    expect(handOnly.exitCode).toBe(1);
    expect(handOnly.stderr).toMatch(/volume leaky is mounted by hand on node doc-node \(label cli\): such a mount is no leak/);
    expect((await runCli(['--socket', stowage.socket, 'umount', 'leaky'])).exitCode).toBe(0);
    await node.docker(['rm', '-f', 'user']);
  });

  it('fails when the engine is stopped, saying how to start it', async () => {
    const hostArgs = ['doctor', '--json', '--socket', join(tmp, 'no.sock'), '--root', join(tmp, 'root'), '--node-id', 'doc-node',
      '--docker-host', node.dockerHost];
    const running = JSON.parse((await runCli(hostArgs, { timeoutMs: 60_000 })).stdout) as Report;
    expect(check(running, 'engine')?.status).toBe('ok');
    // A daemon socket the engine cannot find a plugin by.
    expect(check(running, 'driver')).toMatchObject({
      status: 'fail', message: expect.stringMatching(/^the engine cannot find volume driver no: no managed plugin of that name, no socket \/run\/docker\/plugins\/no.sock/),
      advice: expect.stringMatching(/^run the daemon on the default socket \/run\/docker\/plugins\/no.sock, or write unix:\/\/.*no.sock into \/etc\/docker\/plugins\/no.spec/),
    });
    await node.stop();
    const result = await runCli(hostArgs, { timeoutMs: 60_000 });
    expect(result.exitCode).toBe(1);
    const report = JSON.parse(result.stdout) as Report;
    expect(check(report, 'engine')).toMatchObject({
      status: 'fail',
      message: expect.stringMatching(new RegExp(`^the Docker engine at ${node.dir}/docker.sock does not answer: cannot reach the Docker engine`)),
      advice: 'start the engine (systemctl start docker), or point --docker-host (STOWAGE_DOCKER_HOST) at the socket it listens on',
    });
    expect(check(report, 'driver')).toMatchObject({ status: 'skip', message: 'the Docker engine does not answer' });
    expect(check(report, 'swarm')?.status).toBe('skip');
  });
});
