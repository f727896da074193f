/**
 * The daemon's environment (glibc reads it only at process start) is set by every launcher the
 * package ships: the systemd unit as installed, the managed plugin's config, and `npm start`.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DAEMON_ENVIRONMENT } from '../../src/drivers/cli/daemon-v8-flags.js';
import { renderUnits } from '../../src/drivers/cli/install-service.js';
import { REPO_ROOT } from '../helpers/daemon-process.js';

const shipped = (path: string) => readFile(join(REPO_ROOT, path), 'utf8');
const entries = Object.entries(DAEMON_ENVIRONMENT);

describe('the daemon environment every launcher sets', () => {
  it('names at least the malloc arena cap, whose reason is measured', () => {
    expect(DAEMON_ENVIRONMENT).toMatchObject({ MALLOC_ARENA_MAX: '2' });
  });

  it('the systemd unit sets each before its EnvironmentFile (which may override it), also as install-service writes it', async () => {
    const template = await shipped('systemd/stowage.service');
    const installed = renderUnits({ 'stowage.service': template, 'stowage.socket': await shipped('systemd/stowage.socket') }, {
      execStart: ['/usr/bin/node', '/opt/stowage/dist/bin/stowage.mjs', 'daemon'], envFile: '/etc/stowage/stowage.env', socket: '/run/other.sock',
    })['stowage.service']!;
    for (const unit of [template, installed]) {
      const lines = unit.split('\n');
      const envFileAt = lines.findIndex((l) => l.startsWith('EnvironmentFile='));
      expect(envFileAt).toBeGreaterThan(0);
      for (const [name, value] of entries) {
        const at = lines.indexOf(`Environment=${name}=${value}`);
        expect(at, `Environment=${name}=${value} in stowage.service`).toBeGreaterThanOrEqual(0);
        expect(at).toBeLessThan(envFileAt);
      }
    }
  });

  it('the managed plugin sets each, settable', async () => {
    const config = JSON.parse(await shipped('plugin/config.json')) as { env: Array<{ name: string; value: string; settable?: string[] }> };
    for (const [name, value] of entries) {
      expect(config.env.find((e) => e.name === name), name).toMatchObject({ value, settable: ['value'] });
    }
  });

  it('npm start sets each before node starts', async () => {
    const start = (JSON.parse(await shipped('package.json')) as { scripts: Record<string, string> }).scripts.start!;
    const assignments = /^((?:[A-Z_][A-Z0-9_]*=\S*\s+)*)node /.exec(start)?.[1]?.trim().split(/\s+/) ?? [];
    expect(assignments.sort()).toEqual(entries.map(([name, value]) => `${name}=${value}`).sort());
  });
});
