// Finding and loading the native parts: the addon (lkl_um.node) and the
// kernel process executable (lkl-um-kernel).
//
// Tried in order: LKL_UM_ADDON / LKL_UM_KERNEL (paths), a build in this
// repository (build/native/bin), then the per-platform package
// @lkl-um/linux-x64-gnu.  When nothing fits, the error lists what was tried.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** What the addon's start() takes (see native/addon/addon.cc). */
export interface NativeStartOptions {
  kernel: string;
  cmdline?: string;
  memory?: number;
  heapSize?: number;
  consoleFd?: number;
  bootTimeoutMs?: number;
  spinUs?: number;
  kernelPollUs?: number;
}

/** The addon's kernel handle. */
export interface NativeKernel {
  readonly window: ArrayBuffer;
  readonly windowBase: bigint;
  readonly completions: Float64Array;
  readonly pid: number;
  /** Starts a call; returns how many results it left in `completions`. */
  submit(nr: number, tag: number, ...args: (number | bigint)[]): number;
  onCompletions(fn: (count: number) => void): void;
  /** Puts the results there are in `completions` now; returns how many. */
  reap(): number;
  alloc(size: number): number;
  free(offset: number): void;
  halt(timeoutMs: number): Promise<number>;
  close(timeoutMs?: number): void;
  console(): string;
  exitStatus(): number;
  inFlight(): number;
  /** Passes a host fd to the kernel process; returns its token for a host call. */
  sendFd(fd: number): number;
}

export interface NativeAddon {
  start(options: NativeStartOptions): Promise<NativeKernel>;
  hostListXattr(path: string | Buffer, followLinks: boolean): string[];
  hostGetXattr(path: string | Buffer, name: string, followLinks: boolean): Buffer;
  hostSetXattr(path: string | Buffer, name: string, value: Buffer, followLinks: boolean): void;
  hostUtimens(path: string | Buffer, atimeNs: bigint, mtimeNs: bigint, followLinks: boolean): void;
  hostMknod(path: string | Buffer, mode: number, dev: number | bigint): void;
  hostSeek(fd: number, offset: number, whence: number): number;
  hostFlock(fd: number, operation: number): boolean;
  hostLockRange(fd: number, exclusive: boolean, start: number, length: number): boolean;
  hostCacheKnown(fd: number): boolean;
}

interface Located {
  addon: string;
  kernel: string;
}

function candidates(): { from: string; dir: string }[] {
  // A checkout's own build first: there the platform package is a
  // workspace whose bin/ may hold binaries from an older pack.
  const found = [{ from: 'this repository\'s build', dir: resolve(__dirname, '../../../build/native/bin') }];
  try {
    const pkg = require.resolve('@lkl-um/linux-x64-gnu/package.json');
    found.push({ from: '@lkl-um/linux-x64-gnu', dir: join(pkg, '..', 'bin') });
  } catch {
    // not installed (another platform): the error lists what was tried
  }
  return found;
}

let located: Located | undefined;

export function locate(): Located {
  if (located) return located;
  const tried: string[] = [];
  const fromEnv = { addon: process.env.LKL_UM_ADDON, kernel: process.env.LKL_UM_KERNEL };
  for (const { from, dir } of candidates()) {
    const addon = fromEnv.addon || join(dir, 'lkl_um.node');
    const kernel = fromEnv.kernel || join(dir, 'lkl-um-kernel');
    if (existsSync(addon) && existsSync(kernel)) {
      located = { addon, kernel };
      return located;
    }
    tried.push(`${from}: ${addon}, ${kernel}`);
  }
  throw new Error(
    'lkl-um: no kernel process and addon found. Tried:\n  ' + tried.join('\n  ') +
      '\nInstall @lkl-um/linux-x64-gnu, build from source (npm install in the repository), ' +
      'or set LKL_UM_ADDON and LKL_UM_KERNEL.',
  );
}

let addon: NativeAddon | undefined;

export function loadAddon(): NativeAddon {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  addon ??= require(locate().addon) as NativeAddon;
  return addon;
}
