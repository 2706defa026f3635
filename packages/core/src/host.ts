// Host calls node:fs lacks, for copying files between the host and the
// kernel faithfully: extended attributes, times to the nanosecond, mknod,
// SEEK_DATA and SEEK_HOLE.  Errors look like node:fs's.
import { errnoName } from './errors';
import { loadAddon } from './native';

function nodeStyle<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    const err = e as Error & { errno?: number; code?: string; syscall?: string };
    if (err.errno !== undefined) {
      err.code = errnoName(-err.errno);
      err.message = `${err.code}: ${err.message}`;
    }
    throw err;
  }
}

export const host = {
  /** The names of a host file's extended attributes. */
  listxattr: (path: string | Buffer, followLinks = false): string[] =>
    nodeStyle(() => loadAddon().hostListXattr(path, followLinks)),
  getxattr: (path: string | Buffer, name: string, followLinks = false): Buffer =>
    nodeStyle(() => loadAddon().hostGetXattr(path, name, followLinks)),
  setxattr: (path: string | Buffer, name: string, value: Buffer, followLinks = false): void =>
    nodeStyle(() => loadAddon().hostSetXattr(path, name, value, followLinks)),
  /** Sets access and modification times, in nanoseconds. */
  utimens: (path: string | Buffer, atimeNs: bigint, mtimeNs: bigint, followLinks = false): void =>
    nodeStyle(() => loadAddon().hostUtimens(path, atimeNs, mtimeNs, followLinks)),
  mknod: (path: string | Buffer, mode: number, dev: number | bigint = 0): void =>
    nodeStyle(() => loadAddon().hostMknod(path, mode, dev)),
  /** lseek(2): SEEK_DATA (3) or SEEK_HOLE (4) among others; -1 past the last data. */
  seek: (fd: number, offset: number, whence: number): number =>
    nodeStyle(() => loadAddon().hostSeek(fd, offset, whence)),
  /** flock(2), LOCK_EX (or LOCK_SH) | LOCK_NB: false when another open file holds it. */
  tryLock: (fd: number, exclusive = true): boolean => nodeStyle(() => loadAddon().hostFlock(fd, (exclusive ? 2 : 1) | 4)),
  /**
   * An open file description lock (F_OFD_SETLK) on bytes [start, start +
   * length) of fd's file, length 0 to its end: false when another open
   * file holds one over them. Held as long as any process has the file open.
   */
  tryLockRange: (fd: number, exclusive: boolean, start: number, length: number): boolean =>
    nodeStyle(() => loadAddon().hostLockRange(fd, exclusive, start, length)),
  /**
   * Whether the host tells what it has cached of fd's file (cachestat(2),
   * or mincore(2) where that is missing; to a user who owns it or may
   * write it): where it does, a disk's large reads of what the host has not
   * cached go around the host's cache.
   */
  cacheKnown: (fd: number): boolean => loadAddon().hostCacheKnown(fd),
};
