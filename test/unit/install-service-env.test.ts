import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { installService } from '../../src/drivers/cli/install-service.js';
import { REPO_ROOT } from '../helpers/daemon-process.js';

describe('install-service writes a settings file that agrees with the units', () => {
  let dir = '';
  afterEach(async () => { await rm(dir, { recursive: true, force: true }); });

  for (const socket of ['/run/docker/plugins/stowage.sock', '/run/docker/plugins/other.sock']) {
    it(`its commented socket line names the socket the units bind (${socket})`, async () => {
      dir = await mkdtemp(join(tmpdir(), 'stowage-install-'));
      await mkdir(join(dir, 'units'));
      const envFile = join(dir, 'etc', 'stowage.env');
      await installService({ dest: join(dir, 'units'), execStart: [process.execPath, join(REPO_ROOT, 'dist', 'bin', 'stowage.mjs'), 'daemon'], envFile, socket,
        templates: join(REPO_ROOT, 'systemd') });
      const env = await readFile(envFile, 'utf8');
      const socketLines = env.split('\n').filter((line) => /^#?\s*STOWAGE_SOCKET=/.test(line));
      expect(socketLines).toEqual([`#STOWAGE_SOCKET=${socket}`]);
      expect(await readFile(join(dir, 'units', 'stowage.socket'), 'utf8')).toMatch(new RegExp(`^ListenStream=${socket}$`, 'm'));
      // Everything else is the shipped file.
      const shipped = await readFile(join(REPO_ROOT, 'systemd', 'stowage.env'), 'utf8');
      expect(env.split('\n').filter((line) => !line.includes('STOWAGE_SOCKET='))).toEqual(shipped.split('\n').filter((line) => !line.includes('STOWAGE_SOCKET=')));
    });
  }
});
