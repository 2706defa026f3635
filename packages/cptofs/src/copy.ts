// Copying trees the way cp -a does, between two sides: the host (node:fs
// and the host calls node:fs lacks) and the kernel (kernel.fs).  One engine,
// two adapters: cptofs copies host -> kernel, cpfromfs kernel -> host.
//
// What -a keeps: modes (setuid, sticky), numeric owners, times to the
// nanosecond (a directory's after its contents), extended attributes of
// every namespace (security.capability too), symlinks as symlinks, hard
// links as hard links, FIFOs, sockets and device nodes, and holes: sparse
// files stay sparse.
import * as hostfs from 'node:fs/promises';
import { closeSync, constants as hostConstants, openSync, readFileSync } from 'node:fs';
import { posix } from 'node:path';
import { CONSTANTS as C, dataExtents, host, Kernel, KernelError, Reporter } from '@lkl-um/core';
import type { FileHandle as KernelFileHandle } from '@lkl-um/core';
import { Excluder } from '@lkl-um/core';

/** An entry's status, the same from either side. */
export interface Status {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  rdev: bigint;
  nlink: number;
  dev: bigint;
  ino: bigint;
  atimeNs: bigint;
  mtimeNs: bigint;
  blocks: number;
}

const S_IFMT = C.S_IFMT;
export const isDir = (m: number) => (m & S_IFMT) === C.S_IFDIR;
const isReg = (m: number) => (m & S_IFMT) === C.S_IFREG;
export const isLnk = (m: number) => (m & S_IFMT) === C.S_IFLNK;
const inode = (st: Status) => `${st.dev}:${st.ino}`;
/* As GNU cp's "will not overwrite just-created". */
const justWritten = () =>
  Object.assign(new Error('this copy has just written a file there, from another source: not overwritten'), { code: 'EEXIST' });
/* Opening a file that is there to write it anew; the kernel's flags are the host's (one ABI). */
const OVERWRITE = C.O_WRONLY | C.O_TRUNC | C.O_NOFOLLOW;

interface Reader {
  /** The data extents [start, end) of a file of `size` bytes. */
  extents(size: number): Promise<[number, number][]>;
  read(buf: Buffer, position: number): Promise<number>;
  close(): Promise<void>;
}

interface Writer {
  write(buf: Buffer, position: number): Promise<void>;
  truncate(size: number): Promise<void>;
  close(): Promise<void>;
}

/** One side of a copy. */
export interface Side {
  readonly name: string;
  /** Who owns what we create here, and whether we may write to files without write permission. */
  readonly creator: { uid: number; gid: number; root: boolean };
  /** The bits the side's umask takes from the modes of what it creates, now. */
  umask(): Promise<number>;
  /** Reads a small file whole, in one go. */
  readSmall(path: string): Promise<Buffer>;
  /** Creates a small file with its mode and data, in one go; or, `existing`, truncates the file there and writes it. */
  writeSmall(path: string, mode: number, data: Buffer, existing: boolean): Promise<void>;
  lstat(path: string): Promise<Status>;
  readdir(path: string): Promise<string[]>;
  readlink(path: string): Promise<string>;
  listxattr(path: string): Promise<string[]>;
  getxattr(path: string, name: string): Promise<Buffer>;
  openRead(path: string): Promise<Reader>;

  mkdir(path: string, mode: number): Promise<void>;
  unlink(path: string): Promise<void>;
  /** A new file; or, `existing`, the file there, truncated (as cp overwrites). */
  create(path: string, mode: number, existing: boolean): Promise<Writer>;
  symlink(target: string, path: string): Promise<void>;
  link(existing: string, path: string): Promise<void>;
  mknod(path: string, mode: number, rdev: bigint): Promise<void>;
  setxattr(path: string, name: string, value: Buffer): Promise<void>;
  lchown(path: string, uid: number, gid: number): Promise<void>;
  chmod(path: string, mode: number): Promise<void>;
  lutimes(path: string, atimeNs: bigint, mtimeNs: bigint): Promise<void>;
}

/* The fields node:fs's BigIntStats and ours have alike. */
interface BigStat {
  mode: bigint;
  uid: bigint;
  gid: bigint;
  size: bigint;
  rdev: bigint;
  nlink: bigint;
  dev: bigint;
  ino: bigint;
  atimeNs: bigint;
  mtimeNs: bigint;
  blocks: bigint;
}

/* The umask in a /proc/<pid>/status; 0 where it is not there (Linux before 4.7). */
function umaskOf(status: string): number {
  const umask = /^Umask:\s*([0-7]+)$/m.exec(status);
  return umask ? parseInt(umask[1]!, 8) : 0;
}

function toStatus(st: BigStat): Status {
  return {
    mode: Number(st.mode),
    uid: Number(st.uid),
    gid: Number(st.gid),
    size: Number(st.size),
    rdev: st.rdev,
    nlink: Number(st.nlink),
    dev: st.dev,
    ino: st.ino,
    atimeNs: st.atimeNs,
    mtimeNs: st.mtimeNs,
    blocks: Number(st.blocks),
  };
}

// --- the host -------------------------------------------------------------------

/*
 * Paths are carried as byte strings (latin1: one character per byte), so
 * that names which are not UTF-8 are copied as they are, as cp does.
 * bytes() gives the bytes back to the host's and the kernel's calls;
 * shown() makes a path readable in messages.
 */
const bytes = (s: string) => Buffer.from(s, 'latin1');
const fromBytes = (b: Buffer) => b.toString('latin1');
export const asBytes = (s: string) => Buffer.from(s, 'utf8').toString('latin1');
export const shown = (s: string) => Buffer.from(s, 'latin1').toString('utf8');

export const hostSide: Side = {
  name: 'the host',
  creator: { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, root: process.getuid?.() === 0 },
  umask: async () => umaskOf(await hostfs.readFile('/proc/self/status', 'utf8')),
  // Small files: a synchronous read costs less than a trip to the thread pool.
  readSmall: async (path) => {
    const fd = openSync(bytes(path), hostConstants.O_RDONLY | hostConstants.O_NOFOLLOW);
    try {
      return readFileSync(fd);
    } finally {
      closeSync(fd);
    }
  },
  writeSmall: (path, mode, data, existing) => hostfs.writeFile(bytes(path), data, { flag: existing ? OVERWRITE : 'wx', mode }),
  lstat: async (path) => toStatus(await hostfs.lstat(bytes(path), { bigint: true })),
  readdir: async (path) => (await hostfs.readdir(bytes(path), { encoding: 'buffer' })).map(fromBytes),
  readlink: async (path) => fromBytes(await hostfs.readlink(bytes(path), { encoding: 'buffer' })),
  listxattr: async (path) => host.listxattr(bytes(path)),
  getxattr: async (path, name) => host.getxattr(bytes(path), name),
  async openRead(path) {
    const fh = await hostfs.open(bytes(path), hostConstants.O_RDONLY | hostConstants.O_NOFOLLOW);
    return {
      extents: (size) => dataExtents(size, async (offset, whence) => host.seek(fh.fd, offset, whence)),
      read: async (buf, position) => (await fh.read(buf, 0, buf.length, position)).bytesRead,
      close: () => fh.close(),
    };
  },
  mkdir: (path, mode) => hostfs.mkdir(bytes(path), mode).then(() => undefined),
  unlink: (path) => hostfs.unlink(bytes(path)),
  async create(path, mode, existing) {
    const fh = await hostfs.open(bytes(path), existing ? OVERWRITE : 'wx', mode);
    return {
      write: async (buf, position) => {
        for (let done = 0; done < buf.length; ) {
          done += (await fh.write(buf, done, buf.length - done, position + done)).bytesWritten;
        }
      },
      truncate: (size) => fh.truncate(size),
      close: () => fh.close(),
    };
  },
  symlink: (target, path) => hostfs.symlink(bytes(target), bytes(path)),
  link: (existing, path) => hostfs.link(bytes(existing), bytes(path)),
  mknod: async (path, mode, rdev) => host.mknod(bytes(path), mode, rdev),
  setxattr: async (path, name, value) => host.setxattr(bytes(path), name, value),
  lchown: (path, uid, gid) => hostfs.lchown(bytes(path), uid, gid),
  chmod: (path, mode) => hostfs.chmod(bytes(path), mode),
  lutimes: async (path, atimeNs, mtimeNs) => host.utimens(bytes(path), atimeNs, mtimeNs),
};

// --- the kernel -----------------------------------------------------------------

export function kernelSide(k: Kernel): Side {
  return {
    name: 'the image',
    creator: { uid: 0, gid: 0, root: true },
    umask: async () => umaskOf(await k.fs.readFile('/proc/self/status', 'utf8').catch(() => '')),
    readSmall: (path) => k.fs.readFile(bytes(path), { flag: C.O_RDONLY | C.O_NOFOLLOW }),
    writeSmall: (path, mode, data, existing) => k.fs.writeFile(bytes(path), data, { flag: existing ? OVERWRITE : 'wx', mode }),
    lstat: async (path) => toStatus(await k.fs.lstat(bytes(path), { bigint: true })),
    readdir: async (path) => (await k.fs.readdir(bytes(path), { encoding: 'buffer' })).map(fromBytes),
    readlink: async (path) => fromBytes(await k.fs.readlink(bytes(path), { encoding: 'buffer' })),
    listxattr: async (path) => k.fs.llistxattr(bytes(path)).catch((e: KernelError) => (e.code === 'EOPNOTSUPP' ? [] : Promise.reject(e))),
    getxattr: (path, name) => k.fs.lgetxattr(bytes(path), name),
    async openRead(path) {
      const fh = await k.fs.open(bytes(path), C.O_RDONLY | C.O_NOFOLLOW);
      return {
        extents: (size) => fh.dataExtents(size),
        read: async (buf, position) => (await fh.read(buf, 0, buf.length, position)).bytesRead,
        close: () => fh.close(),
      };
    },
    mkdir: (path, mode) => k.fs.mkdir(bytes(path), mode).then(() => undefined),
    unlink: (path) => k.fs.unlink(bytes(path)),
    async create(path, mode, existing) {
      const fh: KernelFileHandle = await k.fs.open(bytes(path), existing ? OVERWRITE : 'wx', mode);
      return {
        write: async (buf, position) => void (await fh.writeAll(buf, position)),
        truncate: (size) => fh.truncate(size),
        close: () => fh.close(),
      };
    },
    symlink: (target, path) => k.fs.symlink(bytes(target), bytes(path)),
    link: (existing, path) => k.fs.link(bytes(existing), bytes(path)),
    mknod: (path, mode, rdev) => k.fs.mknod(bytes(path), mode, rdev),
    setxattr: (path, name, value) => k.fs.lsetxattr(bytes(path), name, value),
    lchown: (path, uid, gid) => k.fs.lchown(bytes(path), uid, gid),
    chmod: (path, mode) => k.fs.chmod(bytes(path), mode),
    lutimes: (path, atimeNs, mtimeNs) => k.fs.lutimes(bytes(path), atimeNs, mtimeNs),
  };
}

// --- the engine -----------------------------------------------------------------

export interface Preserve {
  mode: boolean;
  ownership: boolean;
  timestamps: boolean;
  links: boolean;
  xattr: boolean;
}

export interface CopyOptions {
  preserve: Preserve;
  exclude: Excluder;
  /** Owner and group for every copied entry, instead of the source's. */
  owner?: number;
  group?: number;
  /** security.selinux for every copied entry. */
  selinux?: string;
  /** How many entries are looked at or copied at once. */
  concurrency?: number;
  /** How to name a path in messages (image paths without the mount point). */
  display?: (path: string) => string;
  /** A file the destination must never replace or write: the image being read (cpfromfs). */
  image?: { dev: bigint; ino: bigint };
}

export interface Progress {
  files: number;
  bytes: number;
}

const CHUNK = 8 << 20;
const SMALL = 256 << 10;

/* A counting semaphore: at most n holders at once. */
class Limit {
  #free: number;
  readonly #waiting: (() => void)[] = [];
  constructor(n: number) {
    this.#free = n;
  }
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#free > 0) this.#free--;
    else await new Promise<void>((r) => this.#waiting.push(r));
    try {
      return await fn();
    } finally {
      const next = this.#waiting.shift();
      if (next) next();
      else this.#free++;
    }
  }
}

const errorText = (e: unknown) => (e as Error).message;
const skipped = (e: unknown) => !!(e as { skipped?: boolean }).skipped;

export class TreeCopier {
  readonly progress: Progress = { files: 0, bytes: 0 };
  readonly #links = new Map<string, Promise<string | undefined>>();
  /* Destination files written in place by this copy (dev:ino): each only once. */
  readonly #overwritten = new Set<string>();
  /* Entries this copy created (dev:ino): a later source is not copied over one, as with cp. */
  readonly #created = new Set<string>();
  /* Per destination directory, creations whose outcome is not known yet. */
  readonly #creating = new Map<string, Set<Promise<void>>>();
  readonly #limit: Limit;
  /* The destination's umask, looked at once: what is created through it may need a chmod. */
  #umask?: Promise<number>;

  constructor(
    private readonly from: Side,
    private readonly to: Side,
    private readonly options: CopyOptions,
    private readonly report: Reporter,
  ) {
    this.#limit = new Limit(options.concurrency ?? 64);
  }

  #show(path: string): string {
    return shown(this.options.display ? this.options.display(path) : path);
  }

  /* An error's message, with the paths it quotes shown as the user gave them. */
  #explain(e: unknown): string {
    // (The paths in messages are decoded already.)
    return errorText(e).replace(/'([^']*)'/g, (_, path: string) => `'${this.options.display ? this.options.display(path) : path}'`);
  }

  #cancelled = false;

  /**
   * Stops the copy: no entry is started after this, and files being copied
   * stop at their next chunk.  copy() then returns once what was in flight
   * is done, so that the image can be unmounted cleanly.
   */
  cancel(): void {
    this.#cancelled = true;
  }

  #checkCancelled(): void {
    if (this.#cancelled) throw Object.assign(new Error('cancelled'), { skipped: true });
  }

  /* A file left part-written by cancel(): named, so that nobody takes it for whole. */
  #incomplete(dest: string, written: number, size: number): Error {
    this.report.error(`interrupted: '${this.#show(dest)}' is incomplete (${written} of ${size} bytes)`);
    return Object.assign(new Error('cancelled'), { skipped: true });
  }

  /**
   * Copies `src` (on `from`) to `dest` (on `to`); `rel` names it for
   * --exclude, '' for the top of a copy of what a directory holds ('.').
   */
  async copy(src: string, dest: string, rel: string): Promise<void> {
    if (this.#cancelled || (rel && this.options.exclude.excludes(rel))) return;
    let st: Status;
    try {
      // Under the limit like the copies: a walk let loose on a large tree
      // would have a call in flight for every entry at once, each with its
      // buffers in the kernel's window, until that ran out.
      st = await this.#limit.run(() => {
        this.#checkCancelled(); // queued before a cancel: not looked at after it
        return this.from.lstat(src);
      });
    } catch (e) {
      if (!skipped(e)) this.report.error(`cannot stat '${this.#show(src)}': ${this.#explain(e)}`);
      return;
    }
    try {
      if (isDir(st.mode)) return await this.#copyDir(src, dest, rel, st);
      await this.#limit.run(() => {
        this.#checkCancelled();
        return this.#copyEntry(src, dest, st);
      });
    } catch (e) {
      if (!skipped(e)) this.report.error(`cannot copy '${this.#show(src)}' to '${this.#show(dest)}': ${this.#explain(e)}`);
    }
  }

  async #copyDir(src: string, dest: string, rel: string, st: Status): Promise<void> {
    this.#checkCancelled();
    // Writable for us while we fill it; its own mode comes after.
    await this.to.mkdir(dest, this.#createMode(st, st.mode & 0o7777)).catch(async (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST' || !isDir((await this.to.lstat(dest)).mode)) throw e;
    });
    this.report.verbose(`'${this.#show(src)}' -> '${this.#show(dest)}'`);
    this.progress.files++;
    let names: string[];
    try {
      names = await this.#limit.run(() => {
        this.#checkCancelled();
        return this.from.readdir(src);
      });
    } catch (e) {
      if (!skipped(e)) this.report.error(`cannot read directory '${this.#show(src)}': ${this.#explain(e)}`);
      names = [];
    }
    await Promise.all(names.map((n) => this.copy(`${src}/${n}`, `${dest}/${n}`, rel ? `${rel}/${n}` : n)));
    if (!this.#cancelled) await this.#limit.run(() => this.#metadata(src, dest, st, false));
  }

  async #copyEntry(src: string, dest: string, st: Status): Promise<void> {
    const { preserve } = this.options;
    if (st.nlink > 1 && preserve.links) { // files, symlinks, FIFOs, devices: not directories
      // The first name of an inode is copied; the others link to it.
      const key = `${st.dev}:${st.ino}`;
      const first = this.#links.get(key);
      if (first) {
        const target = await first;
        if (target !== undefined) {
          try {
            await this.to.link(target, dest).catch(async (e: NodeJS.ErrnoException) => {
              if (e.code !== 'EEXIST') throw e;
              const there = this.#replaceable(dest, await this.to.lstat(dest));
              if (isDir(there.mode)) throw e;
              // Already this file (both sources land on one name, as links of one inode).
              if (inode(there) === inode(await this.to.lstat(target))) return;
              if (this.#created.has(inode(there))) throw justWritten();
              // Over an earlier copy, as a file is: replace what is there.
              await this.to.unlink(dest);
              await this.to.link(target, dest);
            });
            this.report.verbose(`'${this.#show(src)}' => '${this.#show(dest)}'`);
            this.progress.files++;
            return;
          } catch (e) {
            if (!unsupported(e)) throw e;
            this.report.warn('hard links', `${this.to.name} cannot keep hard links: copying them as files`);
          }
        }
      } else {
        let done!: (target: string | undefined) => void;
        this.#links.set(key, new Promise((r) => (done = r)));
        let fresh: boolean;
        try {
          fresh = await this.#create(src, dest, st);
          done(dest);
        } catch (e) {
          done(undefined);
          throw e;
        }
        return this.#finish(src, dest, st, fresh);
      }
    }
    return this.#finish(src, dest, st, await this.#create(src, dest, st));
  }

  /* `fresh`: dest was made anew, with its mode, not written over. */
  async #finish(src: string, dest: string, st: Status, fresh: boolean): Promise<void> {
    this.report.verbose(`'${this.#show(src)}' -> '${this.#show(dest)}'`);
    this.progress.files++;
    await this.#metadata(src, dest, st, fresh);
  }

  /*
   * Creates dest, as cp does: a regular file there is overwritten in place
   * (its other names and its inode stay); anything else in the way, not a
   * directory, goes first.  A file that will not open for writing is
   * replaced, as cp -f replaces it.  What this copy has itself created is
   * never copied over: two sources landing on one name (x/f and y/f into
   * one directory, or A and a on vfat) are an error, not a mix of both.
   */
  async #create(src: string, dest: string, st: Status): Promise<boolean> {
    const dir = posix.dirname(dest);
    const inDir = this.#creating.get(dir) ?? new Set<Promise<void>>();
    this.#creating.set(dir, inDir);
    let settle!: () => void;
    const creating = new Promise<void>((resolve) => (settle = resolve));
    inDir.add(creating); // before the create: whoever meets its file waits for it
    const made = async () => {
      this.#created.add(inode(await this.to.lstat(dest)));
      settle();
    };
    try {
      await this.#make(src, dest, st, false, made);
      return true;
    } catch (e) {
      settle();
      if ((e as { code?: string }).code !== 'EEXIST') throw e;
      // Whatever else was being created here is known now.
      await Promise.all([...inDir].filter((other) => other !== creating));
      const there = this.#replaceable(dest, await this.to.lstat(dest));
      if (isDir(there.mode)) throw e;
      // Met again through one name (two sources, or a case-insensitive
      // filesystem), not through another name of a hard-linked file.
      const again = this.#created.has(inode(there)) || (this.#overwritten.has(inode(there)) && there.nlink === 1);
      if (again) throw justWritten();
      // A file that two sources land on (names of one inode there, not
      // here) is written in place once; the next name gets a file of its own.
      let refused: unknown;
      if (isReg(st.mode) && isReg(there.mode) && !this.#overwritten.has(inode(there))) {
        this.#overwritten.add(inode(there)); // at once, before another copy can look
        try {
          await this.#make(src, dest, st, true);
          return false;
        } catch (e) {
          const code = (e as { code?: string }).code;
          if (code !== 'EACCES' && code !== 'EPERM' && code !== 'ETXTBSY') throw e;
          refused = e;
        }
      }
      try {
        await this.to.unlink(dest);
      } catch (e) {
        throw refused ?? e; // why it could not be written, rather than why not removed
      }
      await this.#make(src, dest, st, false, made);
      return true;
    } finally {
      settle();
      inDir.delete(creating);
      if (!inDir.size) this.#creating.delete(dir);
    }
  }

  /* `there` (dest's status), unless it is the image being read: never replaced nor written. */
  #replaceable(dest: string, there: Status): Status {
    const image = this.options.image;
    if (image && there.dev === image.dev && there.ino === image.ino) {
      throw Object.assign(new Error(`'${dest}' is the image being read: not overwritten`), { code: 'EINVAL' });
    }
    return there;
  }

  /* Makes dest (or, `existing`, writes the file there); `made` is called once it exists. */
  async #make(src: string, dest: string, st: Status, existing: boolean, made?: () => Promise<void>): Promise<void> {
    const type = st.mode & S_IFMT;
    const mode = this.options.preserve.mode ? st.mode & 0o7777 : isDir(st.mode) ? 0o755 : 0o644;
    if (isReg(st.mode)) return this.#copyData(src, dest, st, mode, existing, made);
    if (isLnk(st.mode)) {
      const target = await this.from.readlink(src);
      try {
        await this.to.symlink(target, dest);
        return await made?.();
      } catch (e) {
        if (!unsupported(e)) throw e;
        this.report.warn('symlinks', `${this.to.name} cannot hold symbolic links: skipping them, like '${this.#show(src)}'`);
        throw Object.assign(new Error('skipped'), { skipped: true });
      }
    }
    try {
      await this.to.mknod(dest, type | mode, st.rdev);
      await made?.();
    } catch (e) {
      if (!unsupported(e)) throw e;
      this.report.warn('special files', `${this.to.name} cannot hold FIFOs, sockets or devices: skipping them, like '${this.#show(src)}'`);
      throw Object.assign(new Error('skipped'), { skipped: true });
    }
  }

  async #copyData(src: string, dest: string, st: Status, mode: number, existing: boolean, made?: () => Promise<void>): Promise<void> {
    const sparse = st.blocks * 512 < st.size;
    if (st.size <= SMALL && !sparse) {
      const data = await this.from.readSmall(src);
      await this.to.writeSmall(dest, this.#createMode(st, mode), data, existing);
      await made?.();
      this.progress.bytes += data.length;
      return;
    }
    const reader = await this.from.openRead(src);
    try {
      const writer = await this.to.create(dest, this.#createMode(st, mode), existing);
      await made?.();
      try {
        // Only the data extents: holes stay holes.
        const extents = sparse ? await reader.extents(st.size) : [[0, st.size] as [number, number]];
        let buf = Buffer.allocUnsafe(Math.min(CHUNK, Math.max(st.size, 1)));
        let spare = Buffer.allocUnsafe(buf.length);
        // Read the next chunk while the last one is written.
        let pending: Promise<void> | undefined;
        try {
          for (const [start, end] of extents) {
            for (let at = start; at < end; ) {
              if (this.#cancelled) throw this.#incomplete(dest, at, st.size);
              const len = Math.min(buf.length, end - at);
              const n = await reader.read(len === buf.length ? buf : buf.subarray(0, len), at);
              if (n === 0) break;
              await pending;
              const chunk = buf.subarray(0, n);
              const position = at;
              pending = writer.write(chunk, position).then(() => {
                this.progress.bytes += n;
              });
              pending.catch(() => undefined); // awaited; a read may fail first
              [buf, spare] = [spare, buf];
              at += n;
            }
          }
          await pending;
        } finally {
          await pending?.catch(() => undefined); // never close under a write
        }
        if (extents.at(-1)?.[1] !== st.size) await writer.truncate(st.size);
      } finally {
        await writer.close();
      }
    } finally {
      await reader.close();
    }
  }

  /* The mode we create an entry with: its own, but one we can fill. */
  #createMode(st: Status, mode: number): number {
    if (isDir(st.mode)) return mode | 0o700;
    if (isReg(st.mode) && !this.to.creator.root) return mode | 0o200;
    return mode;
  }

  /* Owner, then mode (chown clears setuid), then xattrs (chown clears
   * security.capability), then times, which the others would change.
   * `fresh`: dest was made anew, with its mode. */
  async #metadata(src: string, dest: string, st: Status, fresh: boolean): Promise<void> {
    const { preserve, owner, group, selinux } = this.options;
    const link = isLnk(st.mode);
    const mode = preserve.mode ? st.mode & 0o7777 : isDir(st.mode) ? 0o755 : 0o644;
    let chowned = false;
    if (preserve.ownership || owner !== undefined || group !== undefined) {
      const uid = owner ?? (preserve.ownership ? st.uid : this.to.creator.uid);
      const gid = group ?? (preserve.ownership ? st.gid : this.to.creator.gid);
      if (uid !== this.to.creator.uid || gid !== this.to.creator.gid) {
        chowned = true;
        await this.to.lchown(dest, uid, gid).catch((e) => this.#lost(e, 'owners', 'owners and groups', src));
      }
    }
    // What we created with the right mode needs no chmod, unless a chown
    // cleared its setuid and setgid bits, or the umask took some (a library
    // caller's: the commands clear it).  A file written over takes the
    // source's mode, or keeps its own without preserve.mode (as cp).
    const umask = await (this.#umask ??= this.to.umask());
    const settled = fresh
      ? mode === this.#createMode(st, mode) && !(chowned && mode & 0o6000) && !(mode & umask)
      : !preserve.mode;
    if (!link && !settled) {
      await this.to.chmod(dest, mode).catch((e) => this.#lost(e, 'modes', 'modes', src));
    }
    if (preserve.xattr) {
      let names: string[] = [];
      try {
        names = await this.from.listxattr(src);
      } catch (e) {
        this.report.error(`cannot list the extended attributes of '${this.#show(src)}': ${this.#explain(e)}`);
      }
      for (const name of names) {
        if (selinux && name === 'security.selinux') continue;
        try {
          await this.to.setxattr(dest, name, await this.from.getxattr(src, name));
        } catch (e) {
          this.#lost(e, `xattr:${name.split('.')[0]}`, `extended attributes (${name.split('.')[0]}.*)`, src);
        }
      }
    }
    if (selinux) {
      await this.to
        .setxattr(dest, 'security.selinux', Buffer.from(`${selinux}\0`))
        .catch((e) => this.#lost(e, 'selinux', 'SELinux labels', src));
    }
    if (preserve.timestamps) {
      await this.to.lutimes(dest, st.atimeNs, st.mtimeNs).catch((e) => this.#lost(e, 'times', 'times', src));
    }
  }

  /* What the destination cannot hold is a warning; anything else an error. */
  #lost(e: unknown, kind: string, what: string, src: string): void {
    if (unsupported(e)) this.report.warn(kind, `${this.to.name} cannot keep ${what}, like those of '${this.#show(src)}'`);
    else this.report.error(`cannot set the ${what} of '${this.#show(src)}': ${this.#explain(e)}`);
  }
}

/* The errors a filesystem gives for what it cannot hold. */
function unsupported(e: unknown): boolean {
  const code = (e as { code?: string }).code;
  return code === 'EPERM' || code === 'EOPNOTSUPP' || code === 'ENOTSUP' || code === 'ENOSYS';
}

export function parseNoPreserve(list: string | undefined): Preserve {
  const p: Preserve = { mode: true, ownership: true, timestamps: true, links: true, xattr: true };
  for (const item of (list ?? '').split(',').filter(Boolean)) {
    if (item === 'all') {
      Object.keys(p).forEach((key) => (p[key as keyof Preserve] = false));
    } else if (item in p) {
      p[item as keyof Preserve] = false;
    } else {
      throw new Error(`--no-preserve: unknown attribute '${item}' (mode, ownership, timestamps, links, xattr, all)`);
    }
  }
  return p;
}
