// kernel.fs: the kernel's filesystems through the shape of node:fs/promises.
// Every call runs in the kernel; paths are the kernel's, not the host's.
//
// Large reads and writes go through the window in chunks, several in
// flight, so a 1 GiB readFile needs only a few MiB of window.
import { randomBytes } from 'node:crypto';
import { cp as copyTree, type CpOptions } from './cp';
import { check, KernelError, nodeFsError } from './errors';
import { CONSTANTS as C, STRUCTS, SYSCALLS as NR } from './generated/abi';
import type { Kernel } from './kernel';
import { dataExtents } from './extents';
import { BigIntStats, decodeDirents, decodeStatfs, decodeStatx, Dirent, StatFs, Stats } from './stats';
import { cstringSize, region, WindowBuffer, WindowRegion } from './window';

export type PathLike = string | Buffer | URL;
export type OpenFlags = string | number;
export type TimeLike = number | string | Date | bigint;
export type Data = string | Uint8Array;

/** Bytes per read or write call on large transfers, and how many fly at once. */
export const CHUNK = 1 << 20;
export const DEPTH = 4;

const EBADF = 9;
const EEXIST = 17;
const ENOTDIR = 20;
const EISDIR = 21;
const ENXIO = 6;
const ESPIPE = 29;
const ERANGE = 34;
const ENAMETOOLONG = 36;

/* The most the kernel takes as a path, its NUL too; and a piece of a longer one (see reach()). */
const PATH_MAX = 4096;
const PIECE = 4000;

function pathString(path: PathLike): string {
  if (typeof path === 'string') return path;
  if (Buffer.isBuffer(path)) return path.toString('utf8');
  if (path.protocol !== 'file:') throw new TypeError(`not a file: URL: ${path.href}`);
  return decodeURIComponent(path.pathname);
}

/* A path's bytes for the kernel; a NUL in it would end it early, so it is refused, as node:fs does. */
function pathBytes(path: PathLike): string | Buffer {
  const bytes = Buffer.isBuffer(path) ? path : pathString(path);
  if (typeof bytes === 'string' ? bytes.includes('\0') : bytes.includes(0)) {
    const e = new TypeError(`a path must not hold a NUL byte: ${JSON.stringify(pathString(path))}`);
    throw Object.assign(e, { code: 'ERR_INVALID_ARG_VALUE' });
  }
  return bytes;
}

/* A mode as node:fs takes it: a number, or a string of octal digits ('755'). */
function modeNumber(mode: number | string): number {
  if (typeof mode === 'number') return mode;
  if (!/^[0-7]+$/.test(mode)) throw Object.assign(new TypeError(`not a mode: ${mode}`), { code: 'ERR_INVALID_ARG_VALUE' });
  return parseInt(mode, 8);
}

const FLAGS: Record<string, number> = {
  r: C.O_RDONLY,
  rs: C.O_RDONLY | C.O_SYNC,
  sr: C.O_RDONLY | C.O_SYNC,
  'r+': C.O_RDWR,
  'rs+': C.O_RDWR | C.O_SYNC,
  'sr+': C.O_RDWR | C.O_SYNC,
  w: C.O_TRUNC | C.O_CREAT | C.O_WRONLY,
  wx: C.O_TRUNC | C.O_CREAT | C.O_WRONLY | C.O_EXCL,
  xw: C.O_TRUNC | C.O_CREAT | C.O_WRONLY | C.O_EXCL,
  'w+': C.O_TRUNC | C.O_CREAT | C.O_RDWR,
  'wx+': C.O_TRUNC | C.O_CREAT | C.O_RDWR | C.O_EXCL,
  'xw+': C.O_TRUNC | C.O_CREAT | C.O_RDWR | C.O_EXCL,
  a: C.O_APPEND | C.O_CREAT | C.O_WRONLY,
  ax: C.O_APPEND | C.O_CREAT | C.O_WRONLY | C.O_EXCL,
  xa: C.O_APPEND | C.O_CREAT | C.O_WRONLY | C.O_EXCL,
  as: C.O_APPEND | C.O_CREAT | C.O_WRONLY | C.O_SYNC,
  sa: C.O_APPEND | C.O_CREAT | C.O_WRONLY | C.O_SYNC,
  'a+': C.O_APPEND | C.O_CREAT | C.O_RDWR,
  'ax+': C.O_APPEND | C.O_CREAT | C.O_RDWR | C.O_EXCL,
  'xa+': C.O_APPEND | C.O_CREAT | C.O_RDWR | C.O_EXCL,
  'as+': C.O_APPEND | C.O_CREAT | C.O_RDWR | C.O_SYNC,
  'sa+': C.O_APPEND | C.O_CREAT | C.O_RDWR | C.O_SYNC,
};

export function parseFlags(flags: OpenFlags = 'r'): number {
  if (typeof flags === 'number') return flags;
  const f = FLAGS[flags];
  if (f === undefined) throw new TypeError(`unknown file open flag: ${flags}`);
  return f;
}

/** A time as seconds and nanoseconds: numbers are seconds, bigints nanoseconds. */
export function toTimespec(t: TimeLike): { sec: bigint; nsec: bigint } {
  if (typeof t === 'bigint') {
    const sec = t / 1_000_000_000n - (t % 1_000_000_000n < 0n ? 1n : 0n);
    return { sec, nsec: t - sec * 1_000_000_000n };
  }
  if (t instanceof Date) {
    // Whole milliseconds: exact, where seconds as a float are not.
    const ms = BigInt(t.getTime());
    return toTimespec(ms * 1_000_000n);
  }
  let seconds: number;
  if (typeof t === 'string' && /^-?\d+(\.\d+)?$/.test(t)) seconds = Number(t);
  else if (typeof t === 'number') seconds = t;
  else throw new TypeError(`not a time: ${String(t)}`);
  const sec = Math.floor(seconds);
  return { sec: BigInt(sec), nsec: BigInt(Math.min(999_999_999, Math.round((seconds - sec) * 1e9))) };
}

function toBuffer(data: Data, encoding: BufferEncoding = 'utf8'): Buffer {
  if (typeof data === 'string') return Buffer.from(data, encoding);
  if (Buffer.isBuffer(data)) return data;
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const e = new TypeError(`the data must be a string, a Buffer, a TypedArray or a DataView: ${typeof data}`);
  throw Object.assign(e, { code: 'ERR_INVALID_ARG_TYPE' });
}

/*
 * Runs fn on a handle, then closes it if `owned` (we opened it): when fn
 * fails, its error is the one told, not close's after it.
 */
async function closingAfter<T>(handle: FileHandle, owned: boolean, fn: () => Promise<T>): Promise<T> {
  let result: T;
  try {
    result = await fn();
  } catch (e) {
    if (owned) await handle.close().catch(() => undefined);
    throw e;
  }
  if (owned) await handle.close();
  return result;
}

interface StatOptions {
  bigint?: boolean;
}

export interface ReadResult<T extends Uint8Array> {
  bytesRead: number;
  buffer: T;
}

export interface WriteResult<T> {
  bytesWritten: number;
  buffer: T;
}

export class KernelFs {
  constructor(private readonly kernel: Kernel) {}

  // --- plumbing -------------------------------------------------------------

  /**
   * Runs fn with the paths written into one window buffer.  Each is a path
   * to look up, except the one at index `literal` (a symlink's target, an
   * xattr's name), which goes as it is.  A path the kernel would refuse as
   * too long is reached first (see reach()); failing that, the error is
   * the `syscall`'s, as the call itself would have failed.
   */
  private withPaths<T>(
    syscall: string,
    paths: PathLike[],
    fn: (...addrs: number[]) => Promise<T>,
    literal = -1,
  ): Promise<T> {
    return this.withPathsAnd(syscall, paths, 0, (_, ...addrs) => fn(...addrs), literal);
  }

  /**
   * withPaths, with `size` bytes more in the same buffer (`room`, at its
   * start) for what the call reads or fills: one buffer for all a call
   * needs, as Kernel.withBuffer asks.
   */
  private async withPathsAnd<T>(
    syscall: string,
    paths: PathLike[],
    size: number,
    fn: (room: WindowRegion, ...addrs: number[]) => Promise<T>,
    literal = -1,
  ): Promise<T> {
    const bytes = paths.map(pathBytes);
    const reached: number[] = [];
    try {
      for (let i = 0; i < bytes.length; i++) {
        if (i === literal || cstringSize(bytes[i]) <= PATH_MAX) continue;
        const ret = await this.reach(Buffer.from(bytes[i]));
        if (typeof ret === 'number') {
          const dest = paths.length > 1 && literal !== 1 ? pathString(paths[1]) : undefined;
          throw new KernelError(-ret, syscall, pathString(paths[0]), dest);
        }
        reached.push(ret.dirfd);
        bytes[i] = ret.path;
      }
      const sizes = bytes.map(cstringSize);
      return await this.kernel.withBuffer(
        sizes.reduce((a, b) => a + b, size),
        async (buf) => {
          const addrs: number[] = [];
          let at = size;
          for (let i = 0; i < bytes.length; i++) {
            const b = bytes[i];
            const n = typeof b === 'string' ? buf.bytes.write(b, at, 'utf8') : b.copy(buf.bytes, at);
            buf.bytes[at + n] = 0;
            addrs.push(buf.address + at);
            at += sizes[i];
          }
          return fn(region(buf, 0, size), ...addrs);
        },
      );
    } finally {
      for (const fd of reached) await this.call(NR.close, fd);
    }
  }

  /*
   * The kernel takes no path of PATH_MAX bytes or more, but a tree may go
   * deeper: a long path is walked a piece at a time, each piece an O_PATH
   * directory opened from the one before (as GNU tar and fts go down), and
   * what is left is named from the last: /proc/self/fd/N/rest, which the
   * kernel looks up as the rest of the path from that directory.  Returns
   * that path and the fd to close after the call, or a negative errno.
   */
  private async reach(path: Buffer): Promise<{ path: Buffer; dirfd: number } | number> {
    const slash = 0x2f;
    let dirfd: number = C.AT_FDCWD;
    let rest = path;
    while (cstringSize(rest) > PIECE) {
      const cut = rest.lastIndexOf(slash, PIECE - 1);
      if (cut <= 0) return -ENAMETOOLONG; // a name longer than any filesystem takes
      const piece = rest.subarray(0, cut);
      const fd = await this.withPaths('open', [piece], (p) =>
        this.call(NR.openat, dirfd, p, C.O_PATH | C.O_DIRECTORY | C.O_CLOEXEC, 0),
      );
      if (dirfd !== C.AT_FDCWD) await this.call(NR.close, dirfd);
      if (fd < 0) return fd;
      dirfd = fd;
      rest = rest.subarray(cut + 1);
      while (rest[0] === slash) rest = rest.subarray(1); // "a//b": never absolute again
    }
    return { path: Buffer.concat([Buffer.from(`/proc/self/fd/${dirfd}/`), rest]), dirfd };
  }

  /** A system call on a path, checked. */
  private async onPath(syscall: string, path: PathLike, call: (addr: number) => Promise<number>): Promise<number> {
    return this.withPaths(syscall, [path], async (addr) => check(await call(addr), syscall, pathString(path)));
  }

  private call(nr: number, ...args: (number | bigint)[]): Promise<number> {
    return this.kernel.call(nr, ...args);
  }

  // --- opening --------------------------------------------------------------

  async open(path: PathLike, flags: OpenFlags = 'r', mode: number | string = 0o666): Promise<FileHandle> {
    const fd = await this.onPath('open', path, (p) =>
      this.call(NR.openat, C.AT_FDCWD, p, parseFlags(flags) | C.O_CLOEXEC, modeNumber(mode)),
    );
    return new FileHandle(this.kernel, this, fd, pathString(path));
  }

  // --- whole files ----------------------------------------------------------

  readFile(path: PathLike | FileHandle, options: BufferEncoding | { encoding: BufferEncoding; flag?: OpenFlags }): Promise<string>;
  readFile(path: PathLike | FileHandle, options?: { encoding?: null; flag?: OpenFlags } | null): Promise<Buffer>;
  async readFile(
    path: PathLike | FileHandle,
    options?: BufferEncoding | { encoding?: BufferEncoding | null; flag?: OpenFlags } | null,
  ): Promise<string | Buffer> {
    const opts = typeof options === 'string' ? { encoding: options } : (options ?? {});
    const handle = path instanceof FileHandle ? path : await this.open(path, opts.flag ?? 'r');
    return closingAfter(handle, handle !== path, async () => {
      const data = await handle.readAll();
      return opts.encoding ? data.toString(opts.encoding) : data;
    });
  }

  async writeFile(
    path: PathLike | FileHandle,
    data: Data,
    options?: BufferEncoding | { encoding?: BufferEncoding; mode?: number | string; flag?: OpenFlags },
  ): Promise<void> {
    const opts = typeof options === 'string' ? { encoding: options } : (options ?? {});
    const flags = parseFlags(opts.flag ?? 'w');
    const bytes = toBuffer(data, opts.encoding); // before opening: bad data must not truncate the file
    const handle = path instanceof FileHandle ? path : await this.open(path, flags, opts.mode ?? 0o666);
    // A file we opened is written from its start, unless appending.
    const position = path instanceof FileHandle || flags & C.O_APPEND ? null : 0;
    await closingAfter(handle, handle !== path, () => handle.writeAll(bytes, position));
  }

  async appendFile(
    path: PathLike | FileHandle,
    data: Data,
    options?: BufferEncoding | { encoding?: BufferEncoding; mode?: number | string; flag?: OpenFlags },
  ): Promise<void> {
    const opts = typeof options === 'string' ? { encoding: options } : (options ?? {});
    return this.writeFile(path, data, { ...opts, flag: opts.flag ?? 'a' });
  }

  async truncate(path: PathLike, len = 0): Promise<void> {
    await this.onPath('truncate', path, (p) => this.call(NR.truncate, p, len));
  }

  async copyFile(src: PathLike, dest: PathLike, mode = 0): Promise<void> {
    // Whatever fails, it is copyfile's failure, of both names, as in node:fs.
    const asCopyfile = (e: unknown) =>
      Promise.reject(e instanceof KernelError ? new KernelError(-e.errno, 'copyfile', pathString(src), pathString(dest)) : e);
    const COPYFILE_EXCL = 1;
    const from = await this.open(src, 'r').catch(asCopyfile);
    try {
      const st = await from.stat({ bigint: true });
      if (st.isDirectory()) throw new KernelError(EISDIR, 'copyfile', pathString(src), pathString(dest));
      // Opened without truncating, as libuv does: onto itself (or a link
      // to it) it is left alone, where truncating would empty it.
      const flags = C.O_WRONLY | C.O_CREAT | (mode & COPYFILE_EXCL ? C.O_EXCL : 0);
      const to = await this.open(dest, flags, Number(st.mode & 0o7777n)).catch(asCopyfile);
      try {
        const there = await to.stat({ bigint: true });
        if (there.dev === st.dev && there.ino === st.ino) return;
        await to.truncate(0);
        for (;;) {
          const n = check(
            await this.call(NR.copy_file_range, from.fd, 0, to.fd, 0, CHUNK * DEPTH * 4, 0),
            'copyfile',
            pathString(src),
            pathString(dest),
          );
          if (n === 0) break;
        }
        await to.chmod(Number(st.mode & 0o7777n));
      } finally {
        await to.close();
      }
    } finally {
      await from.close();
    }
  }

  /** node:fs's cp: a file, or with recursive a tree; see cp.ts for what differs. */
  cp(src: PathLike, dest: PathLike, options?: CpOptions): Promise<void> {
    return copyTree(this, src, dest, options);
  }

  // --- status ---------------------------------------------------------------

  private async statx(path: PathLike, flags: number, syscall: string, options?: StatOptions) {
    const size = STRUCTS.statx.size;
    return this.withPathsAnd(syscall, [path], size, async (buf, p) => {
      check(
        await this.call(NR.statx, C.AT_FDCWD, p, flags, C.STATX_BASIC_STATS | C.STATX_BTIME, buf.address),
        syscall,
        pathString(path),
      );
      const raw = decodeStatx(buf.bytes);
      return options?.bigint ? new BigIntStats(raw) : new Stats(raw);
    });
  }

  stat(path: PathLike, options: { bigint: true }): Promise<BigIntStats>;
  stat(path: PathLike, options?: StatOptions): Promise<Stats>;
  stat(path: PathLike, options?: StatOptions): Promise<Stats | BigIntStats> {
    return this.statx(path, 0, 'stat', options);
  }

  lstat(path: PathLike, options: { bigint: true }): Promise<BigIntStats>;
  lstat(path: PathLike, options?: StatOptions): Promise<Stats>;
  lstat(path: PathLike, options?: StatOptions): Promise<Stats | BigIntStats> {
    return this.statx(path, C.AT_SYMLINK_NOFOLLOW, 'lstat', options);
  }

  async access(path: PathLike, mode = 0): Promise<void> {
    await this.onPath('access', path, (p) => this.call(NR.faccessat2, C.AT_FDCWD, p, mode, 0));
  }

  statfs(path: PathLike, options: { bigint: true }): Promise<StatFs<bigint>>;
  statfs(path: PathLike, options?: StatOptions): Promise<StatFs<number>>;
  async statfs(path: PathLike, options?: StatOptions): Promise<StatFs<number> | StatFs<bigint>> {
    return this.withPathsAnd('statfs', [path], STRUCTS.statfs.size, async (buf, p) => {
      check(await this.call(NR.statfs, p, buf.address), 'statfs', pathString(path));
      return decodeStatfs(buf.bytes, !!options?.bigint);
    });
  }

  // --- changing status ------------------------------------------------------

  async chmod(path: PathLike, mode: number | string): Promise<void> {
    await this.onPath('chmod', path, (p) => this.call(NR.fchmodat, C.AT_FDCWD, p, modeNumber(mode)));
  }

  async chown(path: PathLike, uid: number, gid: number): Promise<void> {
    await this.onPath('chown', path, (p) => this.call(NR.fchownat, C.AT_FDCWD, p, uid, gid, 0));
  }

  async lchown(path: PathLike, uid: number, gid: number): Promise<void> {
    await this.onPath('lchown', path, (p) =>
      this.call(NR.fchownat, C.AT_FDCWD, p, uid, gid, C.AT_SYMLINK_NOFOLLOW),
    );
  }

  /** Sets times: numbers and strings are seconds, Dates as they are, bigints nanoseconds. */
  async utimes(path: PathLike, atime: TimeLike, mtime: TimeLike): Promise<void> {
    await this.utimensat('utime', path, atime, mtime, 0);
  }

  async lutimes(path: PathLike, atime: TimeLike, mtime: TimeLike): Promise<void> {
    await this.utimensat('lutime', path, atime, mtime, C.AT_SYMLINK_NOFOLLOW);
  }

  private async utimensat(syscall: string, path: PathLike, atime: TimeLike, mtime: TimeLike, flags: number) {
    await this.withPathsAnd(syscall, [path], 2 * STRUCTS.timespec.size, async (buf, p) => {
      writeTimespecs(buf, atime, mtime);
      check(await this.call(NR.utimensat, C.AT_FDCWD, p, buf.address, flags), syscall, pathString(path));
    });
  }

  // --- names ----------------------------------------------------------------

  async rename(oldPath: PathLike, newPath: PathLike, flags = 0): Promise<void> {
    await this.withPaths('rename', [oldPath, newPath], async (a, b) =>
      check(
        await this.call(NR.renameat2, C.AT_FDCWD, a, C.AT_FDCWD, b, flags),
        'rename',
        pathString(oldPath),
        pathString(newPath),
      ),
    );
  }

  async link(existingPath: PathLike, newPath: PathLike): Promise<void> {
    await this.withPaths('link', [existingPath, newPath], async (a, b) =>
      check(
        await this.call(NR.linkat, C.AT_FDCWD, a, C.AT_FDCWD, b, 0),
        'link',
        pathString(existingPath),
        pathString(newPath),
      ),
    );
  }

  async symlink(target: PathLike, path: PathLike): Promise<void> {
    await this.withPaths(
      'symlink',
      [target, path],
      async (a, b) =>
        check(await this.call(NR.symlinkat, a, C.AT_FDCWD, b), 'symlink', pathString(target), pathString(path)),
      0,
    );
  }

  readlink(path: PathLike, options: { encoding: 'buffer' }): Promise<Buffer>;
  readlink(path: PathLike, options?: { encoding?: BufferEncoding }): Promise<string>;
  async readlink(path: PathLike, options?: { encoding?: BufferEncoding | 'buffer' }): Promise<string | Buffer> {
    const max = 4096;
    return this.withPathsAnd('readlink', [path], max, async (buf, p) => {
      const n = check(await this.call(NR.readlinkat, C.AT_FDCWD, p, buf.address, max), 'readlink', pathString(path));
      const target = Buffer.from(buf.bytes.subarray(0, n));
      const encoding = options?.encoding ?? 'utf8';
      return encoding === 'buffer' ? target : target.toString(encoding);
    });
  }

  async unlink(path: PathLike): Promise<void> {
    await this.onPath('unlink', path, (p) => this.call(NR.unlinkat, C.AT_FDCWD, p, 0));
  }

  /** mknod(2): not in node:fs, here for FIFOs, devices and sockets. */
  async mknod(path: PathLike, mode: number, dev: number | bigint = 0): Promise<void> {
    await this.onPath('mknod', path, (p) => this.call(NR.mknodat, C.AT_FDCWD, p, mode, dev));
  }

  // --- directories ----------------------------------------------------------

  async mkdir(path: PathLike, options?: number | string | { recursive?: boolean; mode?: number | string }): Promise<string | undefined> {
    const opts = typeof options === 'number' || typeof options === 'string' ? { mode: options } : (options ?? {});
    const mode = modeNumber(opts.mode ?? 0o777);
    if (!opts.recursive) {
      await this.onPath('mkdir', path, (p) => this.call(NR.mkdirat, C.AT_FDCWD, p, mode));
      return undefined;
    }
    // Like node:fs: make the missing ancestors, return the first one made.
    const full = pathString(path);
    const parts = full.split('/').filter(Boolean);
    const root = full.startsWith('/') ? '/' : '';
    let first: string | undefined;
    for (let i = 1; i <= parts.length; i++) {
      const prefix = root + parts.slice(0, i).join('/');
      const ret = await this.withPaths('mkdir', [prefix], (p) => this.call(NR.mkdirat, C.AT_FDCWD, p, mode));
      if (ret === 0) {
        first ??= prefix;
      } else if (ret === -EEXIST) {
        if (!(await this.stat(prefix)).isDirectory()) {
          throw new KernelError(i === parts.length ? EEXIST : ENOTDIR, 'mkdir', full);
        }
      } else {
        throw new KernelError(-ret, 'mkdir', full);
      }
    }
    return first;
  }

  async rmdir(path: PathLike): Promise<void> {
    await this.onPath('rmdir', path, (p) => this.call(NR.unlinkat, C.AT_FDCWD, p, C.AT_REMOVEDIR));
  }

  /** Removes files and, with recursive, directory trees; force ignores what is missing. */
  async rm(path: PathLike, options: { recursive?: boolean; force?: boolean } = {}): Promise<void> {
    const name = pathString(path);
    let st: Stats;
    try {
      st = await this.lstat(path);
    } catch (e) {
      if (options.force && (e as KernelError).code === 'ENOENT') return;
      throw e;
    }
    if (!st.isDirectory()) return this.unlink(path);
    // As node:fs says it.
    if (!options.recursive) throw nodeFsError('ERR_FS_EISDIR', EISDIR, `Path is a directory: rm returned EISDIR (is a directory) ${name}`, 'rm', name);
    // As bytes: a name that is not UTF-8 would not survive a string.
    const dir = Buffer.from(pathBytes(path)).toString('latin1').replace(/\/+$/, '');
    for (const entry of await this.readdir(path, { encoding: 'buffer' })) {
      await this.rm(Buffer.from(`${dir}/${entry.toString('latin1')}`, 'latin1'), { ...options, force: false });
    }
    await this.rmdir(path);
  }

  readdir(path: PathLike, options: { withFileTypes: true; recursive?: boolean }): Promise<Dirent[]>;
  readdir(path: PathLike, options?: { withFileTypes?: false; encoding?: BufferEncoding; recursive?: boolean }): Promise<string[]>;
  readdir(path: PathLike, options: { withFileTypes?: false; encoding: 'buffer'; recursive?: boolean }): Promise<Buffer[]>;
  async readdir(
    path: PathLike,
    options: { withFileTypes?: boolean; encoding?: BufferEncoding | 'buffer'; recursive?: boolean } = {},
  ): Promise<string[] | Buffer[] | Dirent[]> {
    const encoding = options.encoding ?? 'utf8';
    const found: (string | Buffer | Dirent)[] = [];
    // Recursive as node:fs has it: a directory's entries, then its
    // subdirectories' in turn (breadth first), named as paths from `path`;
    // symlinks not followed.  By the names' bytes throughout.
    const top = Buffer.from(Buffer.from(pathBytes(path)).toString('latin1').replace(/(?<=.)\/+$/, ''), 'latin1');
    const queue: [dir: Buffer, prefix: Buffer][] = [[top, Buffer.alloc(0)]];
    for (let next = queue.shift(); next; next = queue.shift()) {
      const [dir, prefix] = next;
      const entries = await this.rawEntries(dir).catch((e: KernelError) => {
        if (dir !== top && e.code === 'ENOENT') return []; // gone meanwhile
        throw e;
      });
      const typed = await Promise.all(
        entries.map((e) =>
          options.withFileTypes || (options.recursive && e.type === DT_UNKNOWN)
            ? this.dirent(dir, e).catch((err: KernelError) => (dir !== top && err.code === 'ENOENT' ? undefined : Promise.reject(err)))
            : undefined,
        ),
      );
      entries.forEach((e, i) => {
        const name = Buffer.concat([prefix, e.name]);
        if (options.withFileTypes) {
          if (typed[i]) found.push(typed[i]!);
        } else found.push(encoding === 'buffer' ? name : name.toString(encoding));
        const isDir = typed[i] ? typed[i]!.isDirectory() : e.type === DT_DIR;
        if (options.recursive && isDir) {
          const slash = dir.length === 1 && dir[0] === 0x2f ? dir : Buffer.concat([dir, Buffer.from('/')]);
          queue.push([Buffer.concat([slash, e.name]), Buffer.concat([name, Buffer.from('/')])]);
        }
      });
    }
    return found as string[] | Buffer[] | Dirent[];
  }

  /* A directory's raw entries, in node:fs's order (libuv's scandir sorts by the names' bytes). */
  private async rawEntries(path: PathLike): Promise<RawDirent[]> {
    const dir = await this.openDirectory('scandir', path); // node:fs's name for readdir's failure
    const entries: RawDirent[] = [];
    try {
      for (let batch = await dir.readRaw(); batch.length; batch = await dir.readRaw()) entries.push(...batch);
    } finally {
      await dir.close();
    }
    return entries.sort((a, b) => Buffer.compare(a.name, b.name));
  }

  opendir(path: PathLike): Promise<Dir> {
    return this.openDirectory('opendir', path);
  }

  private async openDirectory(syscall: string, path: PathLike): Promise<Dir> {
    const fd = await this.onPath(syscall, path, (p) =>
      this.call(NR.openat, C.AT_FDCWD, p, C.O_RDONLY | C.O_DIRECTORY | C.O_CLOEXEC, 0),
    );
    return new Dir(this.kernel, this, fd, pathString(path));
  }

  /** The path with every symlink, '.' and '..' resolved, as the kernel finds it. */
  realpath(path: PathLike, options: { encoding: 'buffer' }): Promise<Buffer>;
  realpath(path: PathLike, options?: { encoding?: BufferEncoding }): Promise<string>;
  async realpath(path: PathLike, options?: { encoding?: BufferEncoding | 'buffer' }): Promise<string | Buffer> {
    const fd = await this.onPath('realpath', path, (p) =>
      this.call(NR.openat, C.AT_FDCWD, p, C.O_PATH | C.O_CLOEXEC, 0),
    );
    try {
      // The kernel's own name for what it opened (as glibc's realpath asks it).
      return await this.readlink(`/proc/self/fd/${fd}`, options as { encoding: 'buffer' });
    } finally {
      await this.call(NR.close, fd);
    }
  }

  /** Makes a directory named `prefix` and six random characters, mode 0700; returns its name. */
  async mkdtemp(prefix: string, options?: { encoding?: BufferEncoding }): Promise<string> {
    const letters = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
    for (let tries = 0; ; tries++) {
      const name = prefix + Array.from(randomBytes(6), (b) => letters[b % letters.length]).join('');
      const ret = await this.withPaths('mkdtemp', [name], (p) => this.call(NR.mkdirat, C.AT_FDCWD, p, 0o700));
      if (ret === 0) return options?.encoding ? Buffer.from(name).toString(options.encoding) : name;
      if (ret !== -EEXIST || tries === 100) throw new KernelError(-ret, 'mkdtemp', `${prefix}XXXXXX`);
    }
  }

  /**
   * A Dirent for a raw entry.  Filesystems that do not record types in
   * their directories (iso9660, ...) say DT_UNKNOWN: then, as node:fs does,
   * ask lstat.
   */
  async dirent(parent: string | Buffer, e: RawDirent): Promise<Dirent> {
    const name = e.name.toString('utf8');
    const dir = Buffer.from(parent).toString('latin1').replace(/(?<=.)\/+$/, '');
    let type = e.type;
    if (type === DT_UNKNOWN) {
      // By its bytes: a name that is not UTF-8 would not survive a string.
      const st = await this.lstat(Buffer.from(`${dir === '/' ? '' : dir}/${e.name.toString('latin1')}`, 'latin1'));
      type = (st.mode & C.S_IFMT) >> 12;
    }
    return new Dirent(name, Buffer.from(dir, 'latin1').toString('utf8'), type, e.ino);
  }


  // --- extended attributes ---------------------------------------------------

  getxattr(path: PathLike, name: string): Promise<Buffer> {
    return this.xattrGet('getxattr', NR.getxattr, path, name);
  }

  lgetxattr(path: PathLike, name: string): Promise<Buffer> {
    return this.xattrGet('lgetxattr', NR.lgetxattr, path, name);
  }

  setxattr(path: PathLike, name: string, value: Data, flags = 0): Promise<void> {
    return this.xattrSet('setxattr', NR.setxattr, path, name, value, flags);
  }

  lsetxattr(path: PathLike, name: string, value: Data, flags = 0): Promise<void> {
    return this.xattrSet('lsetxattr', NR.lsetxattr, path, name, value, flags);
  }

  listxattr(path: PathLike): Promise<string[]> {
    return this.xattrList('listxattr', NR.listxattr, path);
  }

  llistxattr(path: PathLike): Promise<string[]> {
    return this.xattrList('llistxattr', NR.llistxattr, path);
  }

  async removexattr(path: PathLike, name: string): Promise<void> {
    await this.withPaths(
      'removexattr',
      [path, name],
      async (p, n) => check(await this.call(NR.removexattr, p, n), 'removexattr', pathString(path)),
      1,
    );
  }

  async lremovexattr(path: PathLike, name: string): Promise<void> {
    await this.withPaths(
      'lremovexattr',
      [path, name],
      async (p, n) => check(await this.call(NR.lremovexattr, p, n), 'lremovexattr', pathString(path)),
      1,
    );
  }

  /*
   * A get or list of unknown size, on `paths`: ask with room for the value,
   * more on ERANGE.
   */
  private async sized(
    syscall: string,
    paths: PathLike[],
    call: (room: WindowRegion, ...addrs: number[]) => Promise<number>,
    literal = -1,
  ): Promise<Buffer> {
    for (let size = 4096; ; size *= 16) {
      const result = await this.withPathsAnd(
        syscall,
        paths,
        size,
        async (room, ...addrs) => {
          const n = await call(room, ...addrs);
          return n === -ERANGE && size < 1 << 20 ? undefined : Buffer.from(room.bytes.subarray(0, check(n, syscall, pathString(paths[0]))));
        },
        literal,
      );
      if (result) return result;
    }
  }

  private xattrGet(syscall: string, nr: number, path: PathLike, name: string): Promise<Buffer> {
    return this.sized(syscall, [path, name], (room, p, n) => this.call(nr, p, n, room.address, room.size), 1);
  }

  private async xattrSet(syscall: string, nr: number, path: PathLike, name: string, value: Data, flags: number) {
    const bytes = toBuffer(value);
    await this.withPathsAnd(
      syscall,
      [path, name],
      bytes.length,
      async (buf, p, n) => {
        bytes.copy(buf.bytes);
        check(await this.call(nr, p, n, buf.address, bytes.length, flags), syscall, pathString(path));
      },
      1,
    );
  }

  private async xattrList(syscall: string, nr: number, path: PathLike): Promise<string[]> {
    const list = await this.sized(syscall, [path], (room, p) => this.call(nr, p, room.address, room.size));
    return list.toString('utf8').split('\0').filter(Boolean);
  }
}

function writeTimespecs(buf: WindowRegion, ...times: TimeLike[]) {
  const [secAt] = STRUCTS.timespec.fields.tv_sec;
  const [nsecAt] = STRUCTS.timespec.fields.tv_nsec;
  times.forEach((t, i) => {
    const { sec, nsec } = toTimespec(t);
    const at = i * STRUCTS.timespec.size;
    buf.bytes.writeBigInt64LE(sec, at + secAt);
    buf.bytes.writeBigInt64LE(nsec, at + nsecAt);
  });
}

/** An open file in the kernel, as node:fs/promises' FileHandle. */
export class FileHandle {
  /* close() called: no new calls.  Closed: the fd is gone. */
  #closing = false;
  #closed = false;

  constructor(
    private readonly kernel: Kernel,
    private readonly fs: KernelFs,
    readonly fd: number,
    private readonly path: string,
  ) {}

  /* The fd, while open: once closed, its number may be another file's. */
  private open(syscall: string): number {
    if (this.#closed) throw this.#refused(syscall, 'file closed');
    return this.fd;
  }

  /* A new call may start: not once close() has been called, as in node:fs. */
  private accepting(syscall: string): void {
    if (this.#closing) throw this.#refused(syscall, this.#closed ? 'file closed' : 'the FileHandle is closing');
  }

  #refused(syscall: string, why: string): KernelError {
    const e = new KernelError(EBADF, syscall, this.path);
    e.message = `EBADF: ${why}, ${syscall} '${this.path}'`;
    return e;
  }

  private async checked(syscall: string, nr: number, ...args: (number | bigint)[]): Promise<number> {
    return check(await this.kernel.call(nr, this.open(syscall), ...args), syscall, this.path);
  }

  /** The file position, or null when the file has none (a pipe). */
  private async position(): Promise<number | null> {
    const ret = await this.kernel.call(NR.lseek, this.open('read'), 0, C.SEEK_CUR);
    if (ret === -ESPIPE) return null;
    return check(ret, 'read', this.path);
  }

  /*
   * Calls at the file position, one after another: each reads it, moves
   * data in chunks at offsets from it, then sets it, which two at once
   * would both start from (read(2) and write(2) move it as one step).
   */
  #atPosition: Promise<unknown> = Promise.resolve();

  private atFilePosition<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#atPosition.then(fn, fn);
    this.#atPosition = run.catch(() => undefined);
    return run;
  }

  /**
   * Reads into target[0, length) from position, in chunks with several in
   * flight.  A null position reads from (and moves) the file position.
   * Returns the number of bytes read: less than length only at the end of
   * a file; from a pipe or a device, what one read(2) gives.
   */
  readInto(target: Uint8Array, position: number | null): Promise<number> {
    this.accepting('read');
    return this.tracked(this.readFrom(target, position));
  }

  private async readFrom(target: Uint8Array, position: number | null): Promise<number> {
    if (position !== null) return this.readAt(target, position);
    return this.atFilePosition(async () => {
      const start = await this.position();
      if (start === null) return this.readSequential(target);
      const total = await this.readAt(target, start);
      await this.checked('read', NR.lseek, start + total, C.SEEK_SET);
      return total;
    });
  }

  private readAt(target: Uint8Array, start: number): Promise<number> {
    return transferChunks(this.kernel, target.length, async (buf, at, len) => {
      const n = await this.checked('read', NR.pread64, buf.address, len, start + at);
      target.set(buf.bytes.subarray(0, n), at);
      return n;
    });
  }

  /* One read(2), as node:fs makes it: a pipe gives what it holds, not what was asked for. */
  private readSequential(target: Uint8Array): Promise<number> {
    return this.kernel.withBuffer(Math.min(CHUNK, Math.max(target.length, 1)), async (buf) => {
      const n = await this.checked('read', NR.read, buf.address, Math.min(buf.size, target.length));
      target.set(buf.bytes.subarray(0, n));
      return n;
    });
  }

  /** Writes data at position (null: the file position, or the end in append mode). */
  writeAll(data: Uint8Array, position: number | null): Promise<number> {
    this.accepting('write');
    return this.tracked(this.writeFrom(data, position));
  }

  private async writeFrom(data: Uint8Array, position: number | null): Promise<number> {
    if (position !== null) return this.writeAt(data, position);
    return this.atFilePosition(async () => {
      const start = await this.appendOrPosition();
      if (start === null) return this.writeSequential(data);
      const total = await this.writeAt(data, start);
      await this.checked('write', NR.lseek, start + total, C.SEEK_SET);
      return total;
    });
  }

  private writeAt(data: Uint8Array, start: number): Promise<number> {
    return transferChunks(this.kernel, data.length, async (buf, at, len) => {
      buf.bytes.set(data.subarray(at, at + len));
      let done = 0;
      while (done < len) {
        done += await this.checked('write', NR.pwrite64, buf.address + done, len - done, start + at + done);
      }
      return len;
    });
  }

  /* Appending (or a pipe) must write in order: null.  Else the position. */
  private async appendOrPosition(): Promise<number | null> {
    const flags = await this.checked('write', NR.fcntl, 3 /* F_GETFL */);
    if (flags & C.O_APPEND) return null;
    return this.position();
  }

  private async writeSequential(data: Uint8Array): Promise<number> {
    let done = 0;
    await this.kernel.withBuffer(Math.min(CHUNK, Math.max(data.length, 1)), async (buf) => {
      while (done < data.length) {
        const len = Math.min(buf.size, data.length - done);
        buf.bytes.set(data.subarray(done, done + len));
        let written = 0;
        while (written < len) {
          written += await this.checked('write', NR.write, buf.address + written, len - written);
        }
        done += len;
      }
    });
    return done;
  }

  /** The data extents [start, end) of the file's first `size` bytes: holes are left out. */
  dataExtents(size: number): Promise<[number, number][]> {
    this.accepting('lseek');
    return dataExtents(size, async (offset, whence) => {
      const ret = await this.kernel.call(NR.lseek, this.open('lseek'), offset, whence);
      return ret === -ENXIO ? -1 : check(ret, 'lseek', this.path);
    });
  }

  /** Reads from the file position to the end, and moves the position there. */
  readAll(): Promise<Buffer> {
    this.accepting('read');
    return this.tracked(this.atFilePosition(() => this.readToEnd()));
  }

  private async readToEnd(): Promise<Buffer> {
    const st = (await this.fstat()) as Stats;
    const start = st.isFile() ? await this.position() : null;
    if (start === null) {
      // A pipe or a device: no size to go by, no position to read at.
      const parts: Buffer[] = [];
      for (;;) {
        const more = Buffer.allocUnsafe(64 * 1024);
        const n = await this.readSequential(more);
        if (!n) break;
        parts.push(more.subarray(0, n));
      }
      return Buffer.concat(parts);
    }
    const parts: Buffer[] = [];
    let at = start;
    const guess = Math.max(0, st.size - start);
    if (guess) {
      const first = Buffer.allocUnsafeSlow(guess);
      const n = await this.readInto(first, at);
      parts.push(first.subarray(0, n));
      at += n;
    }
    // A file that grew, or one that does not know its size (/proc).
    if (!guess || at === start + guess) {
      for (;;) {
        const more = Buffer.allocUnsafe(64 * 1024);
        const n = await this.readInto(more, at);
        if (!n) break;
        parts.push(more.subarray(0, n));
        at += n;
      }
    }
    await this.checked('read', NR.lseek, at, C.SEEK_SET);
    return parts.length === 1 ? parts[0] : Buffer.concat(parts);
  }

  async read<T extends Uint8Array = Buffer>(
    buffer?: T | { buffer?: T; offset?: number; length?: number; position?: number | null },
    offset = 0,
    length?: number,
    position: number | null = null,
  ): Promise<ReadResult<T>> {
    let target: T;
    if (buffer && !(buffer instanceof Uint8Array)) {
      target = buffer.buffer ?? (Buffer.alloc(16384) as unknown as T);
      offset = buffer.offset ?? 0;
      length = buffer.length;
      position = buffer.position ?? null;
    } else {
      target = buffer ?? (Buffer.alloc(16384) as unknown as T);
    }
    length ??= target.length - offset;
    const bytesRead = await this.readInto(target.subarray(offset, offset + length), position);
    return { bytesRead, buffer: target };
  }

  async write<T extends Uint8Array>(
    data: T | string,
    offsetOrPosition?: number | null,
    lengthOrEncoding?: number | BufferEncoding,
    position: number | null = null,
  ): Promise<WriteResult<T | string>> {
    if (typeof data === 'string') {
      const pos = offsetOrPosition ?? null;
      const bytes = Buffer.from(data, (lengthOrEncoding as BufferEncoding) ?? 'utf8');
      return { bytesWritten: await this.writeAll(bytes, pos), buffer: data };
    }
    const offset = offsetOrPosition ?? 0;
    const length = (lengthOrEncoding as number | undefined) ?? data.length - offset;
    return { bytesWritten: await this.writeAll(data.subarray(offset, offset + length), position), buffer: data };
  }

  async readv(buffers: Uint8Array[], position: number | null = null): Promise<{ bytesRead: number; buffers: Uint8Array[] }> {
    // All of them in one piece, as readv(2): at the file position, one read.
    const joined = Buffer.alloc(buffers.reduce((n, b) => n + b.length, 0));
    const bytesRead = await this.readInto(joined, position);
    let at = 0;
    for (const b of buffers) {
      if (at >= bytesRead) break;
      b.set(joined.subarray(at, Math.min(bytesRead, at + b.length)));
      at += b.length;
    }
    return { bytesRead, buffers };
  }

  async writev(buffers: Uint8Array[], position: number | null = null): Promise<{ bytesWritten: number; buffers: Uint8Array[] }> {
    // All of them in one piece, as writev(2): at the file position, one write.
    const bytesWritten = await this.writeAll(Buffer.concat(buffers), position);
    return { bytesWritten, buffers };
  }

  readFile(options: BufferEncoding | { encoding: BufferEncoding }): Promise<string>;
  readFile(options?: { encoding?: null } | null): Promise<Buffer>;
  readFile(options?: BufferEncoding | { encoding?: BufferEncoding | null } | null): Promise<string | Buffer> {
    return this.fs.readFile(this, options as { encoding?: null });
  }

  writeFile(data: Data, options?: BufferEncoding | { encoding?: BufferEncoding }): Promise<void> {
    return this.fs.writeFile(this, data, options);
  }

  appendFile(data: Data, options?: BufferEncoding | { encoding?: BufferEncoding }): Promise<void> {
    return this.fs.writeFile(this, data, options);
  }

  async truncate(len = 0): Promise<void> {
    this.accepting('ftruncate');
    await this.checked('ftruncate', NR.ftruncate, len);
  }

  async sync(): Promise<void> {
    this.accepting('fsync');
    await this.checked('fsync', NR.fsync);
  }

  async datasync(): Promise<void> {
    this.accepting('fdatasync');
    await this.checked('fdatasync', NR.fdatasync);
  }

  stat(options: { bigint: true }): Promise<BigIntStats>;
  stat(options?: StatOptions): Promise<Stats>;
  async stat(options?: StatOptions): Promise<Stats | BigIntStats> {
    this.accepting('fstat');
    return this.fstat(options);
  }

  private async fstat(options?: StatOptions): Promise<Stats | BigIntStats> {
    const size = STRUCTS.statx.size;
    return this.kernel.withBuffer(size + 1, async (buf) => {
      buf.bytes[size] = 0; // the empty path
      await this.checked('fstat', NR.statx, buf.address + size, C.AT_EMPTY_PATH, C.STATX_BASIC_STATS | C.STATX_BTIME, buf.address);
      const raw = decodeStatx(buf.bytes);
      return options?.bigint ? new BigIntStats(raw) : new Stats(raw);
    });
  }

  async chmod(mode: number | string): Promise<void> {
    this.accepting('fchmod');
    await this.checked('fchmod', NR.fchmod, modeNumber(mode));
  }

  async chown(uid: number, gid: number): Promise<void> {
    this.accepting('fchown');
    await this.checked('fchown', NR.fchown, uid, gid);
  }

  async utimes(atime: TimeLike, mtime: TimeLike): Promise<void> {
    this.accepting('futime');
    await this.kernel.withBuffer(2 * STRUCTS.timespec.size, async (buf) => {
      writeTimespecs(buf, atime, mtime);
      await this.checked('futime', NR.utimensat, 0, buf.address, 0);
    });
  }

  /* Reads and writes under way, which close() waits for, as node:fs's does. */
  readonly #inFlight = new Set<Promise<unknown>>();

  private tracked<T>(call: Promise<T>): Promise<T> {
    this.#inFlight.add(call);
    void call.finally(() => this.#inFlight.delete(call)).catch(() => undefined);
    return call;
  }

  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    await Promise.allSettled([...this.#inFlight]);
    this.#closed = true;
    check(await this.kernel.call(NR.close, this.fd), 'close', this.path);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/**
 * Moves `total` bytes in chunks of CHUNK, up to DEPTH at once, each through
 * a window buffer of its own.  step(buf, at, len) moves [at, at + len) and
 * returns how many bytes it moved; a short step ends the transfer there.
 * The first buffer may wait for room in the window; the others are taken
 * only while there is room.  On a failed step the others stop, and the
 * transfer ends only when none is still in flight: the caller may close
 * the file then.
 */
async function transferChunks(
  kernel: Kernel,
  total: number,
  step: (buf: WindowBuffer, at: number, len: number) => Promise<number>,
): Promise<number> {
  if (total === 0) return 0;
  let next = 0;
  let end = total; // lowered by a short step, or to stop
  const size = Math.min(CHUNK, total);
  const buffers = [(await kernel.transferBuffer(size, true))!];
  try {
    for (let i = 1; i < Math.min(DEPTH, Math.ceil(total / CHUNK)); i++) {
      const buf = await kernel.transferBuffer(size, false);
      if (!buf) break;
      buffers.push(buf);
    }
    const results = await Promise.allSettled(
      buffers.map(async (buf) => {
        while (next < end) {
          const at = next;
          const len = Math.min(CHUNK, end - at);
          next += len;
          try {
            const n = await step(buf, at, len);
            if (n < len) end = Math.min(end, at + n);
          } catch (e) {
            end = next = 0;
            throw e;
          }
        }
      }),
    );
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  } finally {
    for (const buf of buffers) buf.free();
  }
  return end;
}

/** An open directory, as node:fs's Dir: read() an entry at a time, or iterate. */
export class Dir {
  #buffered: Dirent[] = [];
  #closed = false;

  constructor(
    private readonly kernel: Kernel,
    private readonly fs: KernelFs,
    private readonly fd: number,
    readonly path: string,
  ) {}

  /** The next batch of raw entries (without . and ..); empty at the end. */
  async readRaw(): Promise<RawDirent[]> {
    const size = 32 * 1024;
    return this.kernel.withBuffer(size, async (buf) => {
      for (;;) {
        const n = check(await this.kernel.call(NR.getdents64, this.fd, buf.address, size), 'scandir', this.path);
        if (n === 0) return [];
        const batch = [...decodeDirents(buf.bytes, n)]
          .filter((e) => !(e.name.length <= 2 && (e.name.equals(DOT) || e.name.equals(DOTDOT))))
          .map((e) => ({ ...e, name: Buffer.from(e.name) }));
        if (batch.length) return batch;
      }
    });
  }

  async read(): Promise<Dirent | null> {
    if (!this.#buffered.length) {
      this.#buffered = await Promise.all((await this.readRaw()).map((e) => this.fs.dirent(this.path, e)));
    }
    return this.#buffered.shift() ?? null;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    check(await this.kernel.call(NR.close, this.fd), 'closedir', this.path);
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Dirent> {
    try {
      for (let e = await this.read(); e; e = await this.read()) yield e;
    } finally {
      await this.close();
    }
  }
}

/** A directory entry as getdents64 gives it. */
export interface RawDirent {
  name: Buffer;
  type: number;
  ino: bigint;
}

const DT_UNKNOWN = 0;
const DT_DIR = 4;
const DOT = Buffer.from('.');
const DOTDOT = Buffer.from('..');
