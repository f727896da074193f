import { isCommandError, type CommandResult, type CommandRunner } from '../../core/command-runner.js';
import { ErrorCodes, StowageError } from '../../core/errors.js';
import { parseDmError, type DmFailure } from './dm-errors.js';

/** A dmsetup call that failed, classified; the message says what failed, never raw stderr. */
export class DmsetupError extends StowageError {
  constructor(readonly failure: DmFailure, readonly args: readonly string[]) {
    super(ErrorCodes.BACKEND_COMMAND,
      `dmsetup ${args.filter((a) => a !== '--noudevsync').join(' ')} failed: ${failure.reason}`);
    this.name = 'DmsetupError';
  }
}

export function isDmFailure(err: unknown, kind: DmFailure['kind']): err is DmsetupError {
  return err instanceof DmsetupError && err.failure.kind === kind;
}

export interface DmsetupConfig {
  /**
   * False when no udev daemon runs (containers, the test VM): dmsetup then gets `--noudevsync`
   * and DM_DISABLE_UDEV=1, so libdevmapper creates the /dev/mapper nodes itself.
   */
  udev: boolean;
  timeoutMs?: number;
  /** Attempts of `remove` while the device is busy, and the pause between them. */
  removeAttempts?: number;
  removeDelayMs?: number;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Every dmsetup call stowage makes, as argv arrays through the one CommandRunner. */
export class Dmsetup {
  /** See DmsetupConfig.udev; the backend sets it at init, when it may look at the system. */
  udev: boolean;

  constructor(private readonly runner: CommandRunner, private readonly config: DmsetupConfig) {
    this.udev = config.udev;
  }

  private async run(args: readonly string[], changesDevices = false): Promise<CommandResult> {
    const argv = changesDevices && !this.udev ? [args[0]!, '--noudevsync', ...args.slice(1)] : [...args];
    const result = await this.runner.run('dmsetup', argv, {
      allowFailure: true,
      timeoutMs: this.config.timeoutMs ?? 30_000,
      ...(this.udev ? {} : { env: { DM_DISABLE_UDEV: '1' } }),
    });
    if (result.exitCode !== 0) throw new DmsetupError(parseDmError(result.stderr || result.stdout), argv);
    return result;
  }

  /** Status text of a device, or undefined when no such device is active. */
  async status(name: string): Promise<string | undefined> {
    return this.readOrAbsent(['status', name]);
  }

  /** Table text of a device, or undefined when no such device is active. */
  async table(name: string): Promise<string | undefined> {
    return this.readOrAbsent(['table', name]);
  }

  private async readOrAbsent(args: string[]): Promise<string | undefined> {
    try {
      return (await this.run(args)).stdout;
    } catch (err) {
      if (isDmFailure(err, 'no-device')) return undefined;
      throw err;
    }
  }

  /** `MAJOR:MINOR` of an active device (as tables name it), or undefined when it is not active. */
  async devno(name: string): Promise<string | undefined> {
    const text = await this.readOrAbsent(['info', '-c', '--noheadings', '-o', 'major,minor', name]);
    if (text === undefined) return undefined;
    const match = /^\s*(\d+):(\d+)\s*$/.exec(text);
    if (!match) throw new StowageError(ErrorCodes.BACKEND_COMMAND, `dmsetup info ${name} printed ${JSON.stringify(text.slice(0, 100))}`);
    return `${match[1]}:${match[2]}`;
  }

  async ls(): Promise<string> {
    return (await this.run(['ls'])).stdout;
  }

  /** `readOnly`: the kernel refuses every write to the device (a snapshot opened for reading). */
  async create(name: string, table: string, readOnly = false): Promise<void> {
    await this.run(['create', name, '--table', table, ...(readOnly ? ['--readonly'] : [])], true);
  }

  async message(device: string, text: string): Promise<void> {
    await this.run(['message', device, '0', text]);
  }

  async suspend(name: string): Promise<void> {
    await this.run(['suspend', name], true);
  }

  async resume(name: string): Promise<void> {
    await this.run(['resume', name], true);
  }

  /** Creates a missing /dev/mapper node (no udev to do it). */
  async mknodes(name: string): Promise<void> {
    await this.run(['mknodes', name]);
  }

  /**
   * Removes a device, retrying while it is busy (a closing file handle, an async udev probe).
   * Returns false when the device did not exist. Throws the last busy error when it stays busy.
   */
  async remove(name: string): Promise<boolean> {
    const attempts = this.config.removeAttempts ?? 10;
    for (let attempt = 1; ; attempt += 1) {
      try {
        await this.run(['remove', name], true);
        return true;
      } catch (err) {
        if (isDmFailure(err, 'no-device')) return false;
        if (!isDmFailure(err, 'busy') || attempt >= attempts) throw err;
        await sleep((this.config.removeDelayMs ?? 200) * attempt);
      }
    }
  }
}

/** Missing tools or a kernel without device-mapper: say what to install instead of a raw failure. */
export function explainUnavailable(err: unknown): unknown {
  if (isDmFailure(err, 'no-kernel')) {
    return new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, 'device-mapper is not available in this kernel ' +
      '(/dev/mapper/control cannot be opened); load it with modprobe dm_thin_pool, or run stowage on a host whose kernel has it',
    { cause: err });
  }
  if (isCommandError(err, 'spawn')) {
    return new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, `the devicemapper backend needs ${err.program}: install dmsetup, ` +
      'thin-provisioning-tools, util-linux and e2fsprogs (xfsprogs for dm.fs=xfs)', { cause: err });
  }
  return err;
}
