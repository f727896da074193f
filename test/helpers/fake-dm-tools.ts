/** The non-dmsetup programs of the simulated kernel (see fake-dm-kernel.ts). */
import type { CommandResult } from '../../src/core/command-runner.js';
import { fail, ok, type FakeDmKernel } from './fake-dm-kernel.js';

const MOUNTS = '/proc/self/mounts';
const BUSY = "syscall 'open' failed: Device or resource busy\nNote: you cannot run this tool with these options on live metadata.";

async function writeMountTable(k: FakeDmKernel): Promise<void> {
  const lines = [...k.mounts].map(([path, device]) => `${device} ${path.replace(/ /g, '\\040')} ext4 rw,relatime 0 0`);
  await k.fs.mkdir('/proc/self', { recursive: true });
  await k.fs.writeFile(MOUNTS, lines.join('\n') + '\n');
}

function thinDevice(k: FakeDmKernel, path: string) {
  const device = k.devices.get(path.replace('/dev/mapper/', ''));
  return device?.thinId !== undefined ? device : undefined;
}

export async function runTool(k: FakeDmKernel, program: string, args: string[]): Promise<CommandResult> {
  const last = args[args.length - 1] ?? '';
  switch (program) {
    case 'losetup': {
      if (args[0] === '--list') {
        const list = [...k.loops].map(([name, file]) => ({ name, 'back-file': file }));
        return ok(list.length === 0 ? '' : JSON.stringify({ loopdevices: list }, null, 3));
      }
      if (args[0] === '--find') {
        let n = 0;
        while (k.loops.has(`/dev/loop${n}`)) n += 1;
        const loop = `/dev/loop${n}`;
        k.loops.set(loop, last);
        const meta = k.metadata.get(last);
        await k.fs.writeFile(loop, meta ? 'THINMETA' : await k.fs.readFile(last).catch(() => ''));
        await k.fs.mkdir(`/sys/dev/block/7:${n}`, { recursive: true });
        await k.fs.writeFile(`/sys/dev/block/7:${n}/uevent`, `MAJOR=7\nMINOR=${n}\nDEVNAME=loop${n}\nDEVTYPE=disk\n`);
        return ok(loop);
      }
      return fail(`fake losetup: unsupported ${args.join(' ')}`);
    }
    case 'blockdev':
      return ok(String(k.sizes.get(k.loops.get(last) ?? last) ?? 2 ** 21));
    case 'thin_check': {
      if (k.metadataOn(last).active) return fail(BUSY);
      const content = await k.fs.readFile(last).catch(() => Buffer.alloc(0));
      return content.subarray(0, 8).toString() === 'THINMETA' ? ok('TRANSACTION_ID=0') : fail('bad checksum in superblock');
    }
    case 'thin_dump': {
      const { meta, active } = k.metadataOn(last);
      if (args.includes('-m') ? !meta?.held : active) return fail(args.includes('-m') ? 'no current metadata snap' : BUSY);
      const content = await k.fs.readFile(last).catch(() => Buffer.alloc(0));
      if (!meta || content.subarray(0, 8).toString() !== 'THINMETA') return fail('bad checksum in superblock');
      const devices = [...meta.ids].sort((a, b) => a - b).map((id) =>
        `  <device dev_id="${id}" mapped_blocks="0" transaction="${meta.createdIn.get(id) ?? 0}" creation_time="0" snap_time="0">\n  </device>\n`);
      return ok(`<superblock uuid="" time="0" transaction="${meta.tx}" flags="0" version="2" data_block_size="128" nr_data_blocks="0">\n` +
        `${devices.join('')}</superblock>\n`);
    }
    case 'thin_delta': {
      const held = [...k.metadata.values()].some((m) => m.held);
      if (!held) return fail('no current metadata snap');
      const [left, right] = [args[args.indexOf('--snap1') + 1], args[args.indexOf('--snap2') + 1]];
      return ok(k.thinDeltaXml.replace(/left="\d+" right="\d+"/, `left="${left}" right="${right}"`));
    }
    case 'mkfs.ext4':
    case 'mkfs.xfs': {
      const device = thinDevice(k, last);
      if (!device) return fail(`${program}: cannot open ${last}`);
      const store = k.store(device.pool!.meta, device.thinId!);
      await k.fs.rm(store, { recursive: true, force: true });
      await k.fs.mkdir(program === 'mkfs.ext4' ? `${store}/lost+found` : store, { recursive: true });
      return ok();
    }
    case 'mount': {
      const [device, path] = args.slice(-2) as [string, string];
      const thin = thinDevice(k, device);
      if (!thin) return fail(`mount: ${path}: special device ${device} does not exist.`, 32);
      if ((await k.fs.readdir(path)).length > 0) return fail('fake mount: target not empty', 32);
      await k.fs.rmdir(path);
      await k.fs.rename(k.store(thin.pool!.meta, thin.thinId!), path);
      k.mounts.set(path, device);
      await writeMountTable(k);
      return ok();
    }
    case 'umount': {
      const device = k.mounts.get(last);
      if (!device) return fail(`umount: ${last}: not mounted.`, 32);
      if (k.busyUmounts.has(last)) return fail(`umount: ${last}: target is busy.`, 32);
      const thin = thinDevice(k, device)!;
      await k.fs.rename(last, k.store(thin.pool!.meta, thin.thinId!));
      await k.fs.mkdir(last);
      k.mounts.delete(last);
      await writeMountTable(k);
      return ok();
    }
    default:
      return fail(`fake kernel: no program ${program}`, 127);
  }
}
