// The Kernel: boots a kernel process, makes system calls into it and shuts
// it down.  System calls are asynchronous: each returns a Promise that
// settles when its result arrives on the event loop.
import { AddDiskOptions, addDisk, Disk, mount, MountOptions } from './disk';
import { check, explainedError, KernelError } from './errors';
import { CONSTANTS as C, SYSCALLS } from './generated/abi';
import { KernelFs } from './fs';
import { loadAddon, locate, NativeKernel } from './native';
import { makeSys, Sys } from './sys';
import { WindowBuffer } from './window';

export type Arg = number | bigint;

export interface BootOptions {
  /** Kernel memory: bytes, or a string like '128M'.  Default 64M. */
  memory?: number | string;
  /** More kernel command line arguments. */
  cmdline?: string;
  /**
   * Where the kernel console goes: 'memory' (default) keeps it for
   * kernel.console(); 'inherit' copies it to this process's stderr; a
   * number is an fd to copy it to.
   */
  console?: 'memory' | 'inherit' | number;
  /** Bytes of window for call buffers; default 32M. */
  heapSize?: number;
  /** How long to wait for the kernel to boot, in ms; default 30 s. */
  bootTimeoutMs?: number;
  /** The kernel process executable; default: the one found next to the addon. */
  kernel?: string;
}

interface Pending {
  resolve(ret: number): void;
  nr: number;
  args: Arg[];
}

const ESHUTDOWN = 108;
const EAGAIN = 11;

/** The least kernel memory that boots, in MiB (the native client refuses less). */
export const MIN_MEMORY_MB = 32;

export function parseSize(size: number | string): number {
  if (typeof size === 'number') return size;
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$/i.exec(size.trim());
  if (!m) throw new TypeError(`not a size: ${size}`);
  const scale = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[m[2].toLowerCase()]!;
  return Math.round(Number(m[1]) * scale);
}

/*
 * Calls in flight, kept apart from the Kernel object so that the addon's
 * completion callback does not keep the Kernel alive: a Kernel nobody
 * references is garbage, and the addon then lets its kernel go.
 */
class CallTable {
  readonly pending = new Map<number, Pending>();
  /** Calls waiting for a slot, in order: backlog[backlogHead...]. */
  backlog: { tag: number; pending: Pending }[] = [];
  backlogHead = 0;
  nextTag = 1;

  get waiting(): boolean {
    return this.backlogHead < this.backlog.length;
  }

  constructor(private readonly native: WeakRef<NativeKernel>) {}

  submit(tag: number, p: Pending): boolean {
    const native = this.native.deref();
    if (!native) {
      p.resolve(-ESHUTDOWN);
      return true;
    }
    try {
      const ready = native.submit(p.nr, tag, ...p.args);
      if (ready) this.complete(native.completions, ready);
      return true;
    } catch (e) {
      if ((e as { errno?: number }).errno === EAGAIN) return false;
      this.pending.delete(tag);
      p.resolve(-((e as { errno?: number }).errno ?? ESHUTDOWN));
      return true;
    }
  }

  /**
   * At shutdown, after the halt: the results it took off the ring while it
   * waited for the calls in flight (no doorbell rings for those), then
   * ESHUTDOWN for every call still without one, so that nothing waits for
   * ever.
   */
  finish(native: NativeKernel): void {
    for (let n = native.reap(); n > 0; n = native.reap()) this.complete(native.completions, n);
    for (const p of this.pending.values()) p.resolve(-ESHUTDOWN);
    this.pending.clear();
    this.backlog = [];
    this.backlogHead = 0;
  }

  complete(completions: Float64Array, count: number): void {
    for (let i = 0; i < count; i++) {
      const tag = completions[2 * i];
      const p = this.pending.get(tag);
      if (!p) continue;
      this.pending.delete(tag);
      p.resolve(completions[2 * i + 1]);
    }
    this.drainBacklog();
  }

  #draining = false;

  /* Calls that found every slot taken go now.  Submitting can complete
   * calls, which lands back here: the outer loop does the work. */
  private drainBacklog(): void {
    if (this.#draining) return;
    this.#draining = true;
    try {
      while (this.waiting) {
        const next = this.backlog[this.backlogHead++];
        if (!this.submit(next.tag, next.pending)) {
          this.backlogHead--;
          break;
        }
      }
      if (!this.waiting && this.backlogHead) {
        this.backlog = [];
        this.backlogHead = 0;
      }
    } finally {
      this.#draining = false;
    }
  }
}

/* Where the window tells its heap's size: struct lkl_um_window's heap_size (lkl_um/protocol.h). */
const HEAP_SIZE_AT = 56;

/* Callers waiting for room for one size of block: the first tries, the others wait their turn. */
interface RoomQueue {
  waiting: number;
  turns: (() => void)[];
  /** Wakes the first: a buffer was given back. */
  freed?: () => void;
}

/** The window's heap gives each buffer a power-of-two block, 64 bytes or more. */
function windowBlock(size: number): number {
  return Math.max(64, 2 ** Math.ceil(Math.log2(Math.max(size, 1))));
}

export class Kernel {
  /** The system calls, by name: `await k.sys.getpid()`.  Negative results throw. */
  readonly sys: Sys;
  /** The filesystem API, shaped like node:fs/promises. */
  readonly fs: KernelFs;
  /** The kernel process's pid on the host. */
  readonly pid: number;
  /** The window: every buffer a system call points at lives in it. */
  readonly memory: Buffer;
  /** The window's address, in this process and in the kernel process. */
  readonly windowBase: number;

  #native: NativeKernel | undefined;
  readonly #calls: CallTable;
  /** The part of the window buffers come from. */
  readonly #heapSize: number;
  #shutdown: Promise<void> | undefined;

  private constructor(native: NativeKernel) {
    this.#native = native;
    this.pid = native.pid;
    this.memory = Buffer.from(native.window);
    this.#heapSize = Number(this.memory.readBigUInt64LE(HEAP_SIZE_AT));
    this.windowBase = Number(native.windowBase);
    const calls = new CallTable(new WeakRef(native));
    const completions = native.completions;
    native.onCompletions((count) => calls.complete(completions, count));
    this.#calls = calls;
    this.sys = makeSys(this);
    this.fs = new KernelFs(this);
  }

  /**
   * Boots a kernel.  Rejects with the kernel's own last words if it cannot.
   * The kernel starts with devtmpfs on /dev, proc on /proc and sysfs on
   * /sys, like a system that has booted.
   */
  static async boot(options: BootOptions = {}): Promise<Kernel> {
    const consoleFd =
      options.console === 'inherit' ? 2 : typeof options.console === 'number' ? options.console : -1;
    const native = await loadAddon().start({
      kernel: options.kernel ?? locate().kernel,
      cmdline: options.cmdline,
      memory: options.memory === undefined ? undefined : parseSize(options.memory),
      heapSize: options.heapSize,
      consoleFd,
      bootTimeoutMs: options.bootTimeoutMs,
    });
    const k = new Kernel(native);
    try {
      for (const [type, dir] of [
        ['devtmpfs', '/dev'],
        ['proc', '/proc'],
        ['sysfs', '/sys'],
      ]) {
        await k.fs.mkdir(dir, { recursive: true });
        check(await k.mountRaw(type, dir, type, C.MS_NOSUID | C.MS_NOEXEC), 'mount', dir);
      }
    } catch (e) {
      native.close();
      throw e;
    }
    return k;
  }

  /**
   * Plugs in a disk image (a path, or an open fd) as a virtio-blk disk.
   * A read-only image needs { readOnly: true }.
   */
  addDisk(image: string | number, options?: AddDiskOptions): Promise<Disk> {
    return addDisk(this, image, options);
  }

  /**
   * Mounts a disk (or one of its partitions); resolves with where.  With
   * type 'auto' (the default) the filesystem is found from its signature,
   * or else by trying each the kernel knows.
   */
  mount(disk: Disk, options?: MountOptions): Promise<string> {
    return mount(this, disk, options);
  }

  /** Unmounts what is mounted at path. */
  async umount(path: string, options: { lazy?: boolean; force?: boolean } = {}): Promise<void> {
    const flags = (options.lazy ? C.MNT_DETACH : 0) | (options.force ? C.MNT_FORCE : 0);
    const ret = await this.withBuffer(Buffer.byteLength(path) + 1, (b) =>
      this.call(SYSCALLS.umount2, b.cstring(path), flags),
    );
    check(ret, 'umount', path);
  }

  /** What is mounted where, from /proc/self/mounts. */
  async mounts(): Promise<{ source: string; target: string; type: string; options: string }[]> {
    const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    return (await this.fs.readFile('/proc/self/mounts', 'utf8'))
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        const [source, target, type, options] = line.split(' ');
        return { source: unescape(source), target: unescape(target), type, options };
      });
  }

  /** mount(2), returning what it returns: -errno on failure. */
  mountRaw(source: string, target: string, type: string, flags: number, data?: string): Promise<number> {
    const parts = [source, target, type, data ?? ''];
    const size = parts.reduce((n, p) => n + Buffer.byteLength(p) + 1, 0);
    return this.withBuffer(size, (b) => {
      let at = 0;
      const addrs = parts.map((p) => {
        const addr = b.address + at;
        at += b.bytes.write(p, at, 'utf8');
        b.bytes[at++] = 0;
        return addr;
      });
      return this.call(SYSCALLS.mount, addrs[0], addrs[1], addrs[2], flags, data === undefined ? 0 : addrs[3]);
    });
  }

  /** Passes a host fd to the kernel process, for a host call; returns its token. */
  sendFd(fd: number): number {
    return this.#alive('sendFd').sendFd(fd);
  }

  /**
   * Makes system call `nr` and resolves with what it returns: -errno on
   * failure (see sys for the throwing form).
   */
  call(nr: number, ...args: Arg[]): Promise<number> {
    // Once shutdown() is called no call starts: what is in flight ends, and
    // the next step of a multi-call operation fails however fast it came.
    if (!this.#native || this.#shutdown) return Promise.resolve(-ESHUTDOWN);
    const calls = this.#calls;
    return new Promise<number>((resolve) => {
      const tag = calls.nextTag++;
      const p: Pending = { resolve, nr, args };
      calls.pending.set(tag, p);
      if (!calls.waiting && calls.submit(tag, p)) return;
      calls.backlog.push({ tag, pending: p });
    });
  }

  /** Allocates a buffer in the window; free it with buffer.free(). */
  alloc(size: number): WindowBuffer {
    const buf = this.#tryAlloc(size);
    if (!buf) throw explainedError(12 /* ENOMEM */, 'alloc', `ENOMEM: alloc of ${size} bytes of window: not that much free`);
    return buf;
  }

  /** The window's bytes taken by live buffers (blocks are powers of two). */
  #windowInUse = 0;
  /** Buffers for bulk transfers that are live, and who waits for one. */
  #transferBuffers = 0;
  #windowWaiters: (() => void)[] = [];

  #tryAlloc(size: number, onFree?: () => void): WindowBuffer | undefined {
    const native = this.#alive('alloc');
    const offset = native.alloc(Math.max(size, 1));
    if (offset < 0) return undefined;
    const block = windowBlock(size);
    this.#windowInUse += block;
    return new WindowBuffer(this, native, offset, size, () => {
      this.#windowInUse -= block;
      this.#windowStuck = false;
      onFree?.();
      for (const queue of this.#roomQueues.values()) queue.freed?.();
      for (const wake of this.#windowWaiters.splice(0)) wake();
    });
  }

  /**
   * A buffer for a bulk transfer.  Many transfers at once share the window
   * rather than fail with ENOMEM: together they take no more than three
   * quarters of it, which leaves room for the small buffers of other calls.
   * With `wait`, waits until another transfer gives one back when there is
   * no room (or takes it over the share when no transfer holds any);
   * without, returns undefined.
   */
  async transferBuffer(size: number, wait: boolean): Promise<WindowBuffer | undefined> {
    const onFree = () => this.#transferBuffers--;
    for (;;) {
      const room = this.#windowInUse + windowBlock(size) <= (this.#heapSize * 3) / 4;
      const alone = wait && this.#transferBuffers === 0;
      let buf = room || alone ? this.#tryAlloc(size, onFree) : undefined;
      // Alone, no other transfer will give one back: wait as small buffers do.
      if (!buf && alone) buf = await this.#waitForRoom(size, onFree);
      if (buf) {
        this.#transferBuffers++;
        return buf;
      }
      if (!wait) return undefined;
      await new Promise<void>((wake) => this.#windowWaiters.push(wake));
    }
  }

  /**
   * Runs fn with a window buffer that is freed afterwards.  When the window
   * is full, waits for the calls in flight to give theirs back (first come
   * first served among calls that need as much), as node:fs queues calls
   * rather than fail them: ENOMEM only when none is in flight.  So fn must
   * not take another buffer while it holds this one (each fs call takes
   * one, for all it needs), or a full window of such holders would wait
   * for itself.
   */
  async withBuffer<T>(size: number, fn: (buf: WindowBuffer) => Promise<T>): Promise<T> {
    const queue = this.#roomQueues.get(windowBlock(size));
    const buf = (!queue && this.#tryAlloc(size)) || (await this.#waitForRoom(size));
    try {
      return await fn(buf);
    } finally {
      buf.free();
    }
  }

  /*
   * Callers waiting for room, by the size of block they need: a small call
   * never waits behind a large one that cannot be served yet (whose room a
   * blocked call may hold until the small one has run).
   */
  readonly #roomQueues = new Map<number, RoomQueue>();
  /** No room came though nothing was in flight: the window is full for good, until a free. */
  #windowStuck = false;

  async #waitForRoom(size: number, onFree?: () => void): Promise<WindowBuffer> {
    const block = windowBlock(size);
    if (block > this.#heapSize) {
      throw explainedError(12 /* ENOMEM */, 'alloc', `ENOMEM: alloc of ${size} bytes of window: more than all of it`);
    }
    let queue = this.#roomQueues.get(block);
    if (!queue) this.#roomQueues.set(block, (queue = { waiting: 0, turns: [] }));
    const mine = queue;
    if (mine.waiting++) await new Promise<void>((turn) => mine.turns.push(turn));
    try {
      for (let idle = 0; ; ) {
        const buf = this.#tryAlloc(size, onFree);
        if (buf) return buf;
        // With nothing in flight for a few turns, nothing will give room
        // back: the window is held by buffers from alloc().
        idle = this.inFlight ? 0 : idle + 1;
        if ((this.#windowStuck && !this.inFlight) || idle > 2) {
          this.#windowStuck = true;
          throw explainedError(12 /* ENOMEM */, 'alloc', `ENOMEM: alloc of ${size} bytes of window: it is full, and no call in flight holds any of it`);
        }
        const freed = await new Promise<boolean>((wake) => {
          // A timeout too: the calls in flight may all end without a free.
          const timer = setTimeout(() => wake(false), 20);
          mine.freed = () => {
            clearTimeout(timer);
            wake(true);
          };
        });
        mine.freed = undefined;
        if (freed) idle = 0;
      }
    } finally {
      if (--mine.waiting) mine.turns.shift()?.();
      else this.#roomQueues.delete(block);
    }
  }

  /** The end of the kernel's console output, when it is kept in memory. */
  console(): string {
    return this.#native?.console() ?? '';
  }

  /** The number of system calls whose results have not arrived. */
  get inFlight(): number {
    return this.#calls.pending.size;
  }

  /**
   * Shuts the kernel down: it syncs, unmounts every filesystem and powers
   * off.  Waits for the system calls in flight first; no call starts
   * after this one, so an fs operation made of several (writeFile: open,
   * writes, close) that is still going fails with ESHUTDOWN at its next
   * call: await it before shutting down.
   * Rejects when the power-off was not clean, with the console's last lines.
   */
  shutdown(timeoutMs = 60000): Promise<void> {
    this.#shutdown ??= (async () => {
      const native = this.#native;
      if (!native) return;
      const status = await native.halt(timeoutMs);
      this.#calls.finish(native);
      const console = native.console();
      native.close();
      this.#native = undefined;
      if (status !== 0) {
        throw new Error(`lkl-um: the kernel did not power off cleanly (wait status ${status})` +
          (console ? `; its console said:\n${console}` : ''));
      }
    })();
    return this.#shutdown;
  }

  #alive(syscall: string): NativeKernel {
    if (!this.#native || this.#shutdown) throw new KernelError(ESHUTDOWN, syscall);
    return this.#native;
  }
}

export { SYSCALLS };
