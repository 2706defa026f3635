// What the disk tools share: boot a kernel for one image, plug it in,
// mount it, and take it all down cleanly at the end, or on Ctrl-C.
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, openSync, rmSync, statfsSync } from 'node:fs';
import { dirname, posix, resolve } from 'node:path';
import { Disk, KernelLog, kernelTypeOf, watchKernelLog } from './disk';
import { errnoMessage, KernelError } from './errors';
import { CONSTANTS as C, ERRNO, STRUCTS, SYSCALLS as NR } from './generated/abi';
import { Kernel, parseSize } from './kernel';

/** openat2()'s RESOLVE_IN_ROOT: resolve as if the directory were '/'. */
const RESOLVE_IN_ROOT = 0x10;

/** How long (in tenths of a second) a busy unmount is retried on close. */
const UMOUNT_TRIES = 50;

export interface ImageOptions {
  /** The image file. */
  image: string;
  /** The filesystem type, or 'auto'. */
  type?: string;
  /** The partition to mount; 0: the whole disk. */
  partition?: number;
  /** Open the image read-only and mount read-only. */
  readOnly?: boolean;
  /** Filesystem options for the mount. */
  options?: string;
  /** Kernel memory, in MiB. */
  memoryMb?: number;
  /** Told what is no error but may surprise; default process.emitWarning. */
  warn?: (message: string) => void;
  /** Show the kernel's messages on stderr. */
  printk?: boolean;
  /** When the image does not exist: make it this size with mkfs.<type>. */
  create?: string;
}

/** A mounted image: the kernel, the disk, and where its filesystem is. */
export interface MountedImage {
  kernel: Kernel;
  disk: Disk;
  root: string;
  /** Unmounts, removes the disk and shuts the kernel down: sync, power off. */
  close(): Promise<void>;
}

/* Types the kernel only reads: their tools make them from a tree, never empty. */
const MADE_FROM_A_TREE: Record<string, string> = {
  squashfs: 'mksquashfs DIR IMAGE',
  erofs: 'mkfs.erofs IMAGE DIR',
  iso9660: 'xorriso -as mkisofs -o IMAGE DIR',
};

/** Makes an image file with the host's mkfs.<type>: truncate, then mkfs. */
export function createImage(image: string, size: string, given: string): void {
  const type = kernelTypeOf(given);
  if (MADE_FROM_A_TREE[type]) {
    throw new Error(`cannot make ${image}: the kernel only reads ${type}, made from a tree (${MADE_FROM_A_TREE[type]}), not empty`);
  }
  const bytes = parseSize(size);
  const fd = openSync(image, 'wx');
  closeSync(fd);
  execFileSync('truncate', ['-s', String(bytes), image]);
  const mkfs = `mkfs.${type === 'ntfs3' ? 'ntfs' : type}`;
  const force: Record<string, string[]> = {
    ext2: ['-q', '-F'], ext3: ['-q', '-F'], ext4: ['-q', '-F'], btrfs: ['-q', '-f'], xfs: ['-q', '-f'],
    f2fs: ['-q', '-f'], ntfs3: ['-q', '-F', '-f'],
  };
  try {
    execFileSync(mkfs, [...(force[type] ?? []), image], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: Buffer };
    rmSync(image, { force: true }); // no half-made image to trip over next time
    throw new Error(
      err.code === 'ENOENT'
        ? `cannot make ${image}: ${mkfs} is not installed`
        : `cannot make ${image}: ${mkfs} failed: ${err.stderr?.toString().trim()}`,
    );
  }
}

/* Why the host may have refused writes to the image: its filesystem is full. */
function hostFull(image: string): string {
  try {
    const st = statfsSync(dirname(resolve(image)));
    const free = process.getuid?.() === 0 ? st.bfree : st.bavail; // root may use the reserve
    return free === 0 ? '; the host\'s filesystem holding it is full' : '';
  } catch {
    return '';
  }
}

/** statfs(2)'s ST_RDONLY (include/linux/statfs.h; not in the UAPI). */
const ST_RDONLY = 0x0001;

/*
 * Whether the filesystem at `root` is read-only: mounted so, or gone so
 * after an error (errors=remount-ro, an aborted journal).
 */
async function readOnlyNow(kernel: Kernel, root: string): Promise<boolean> {
  return kernel.withBuffer(Math.max(STRUCTS.statfs.size, Buffer.byteLength(root) + 1), async (b) => {
    const ret = await kernel.call(NR.statfs, b.cstring(root), b.address);
    const flags = b.bytes.readBigUInt64LE(STRUCTS.statfs.fields.f_flags[0]);
    return ret === 0 && (flags & BigInt(ST_RDONLY)) !== 0n;
  });
}

/*
 * syncfs(2) of the filesystem at `root`, mounted read-write: undefined once
 * everything written is in the image, else the error, in the kernel's
 * words too (its `log` since the mount).  syncfs says 0 in two cases where
 * what was written is lost: a filesystem that shut itself down after an
 * error (ext4, xfs, f2fs) says EIO to an fsync of its root, though; one
 * that went read-only (vfat, btrfs) has nothing more to write, and shows it
 * in statfs(2).
 */
async function syncImage(kernel: Kernel, root: string, image: string, log: KernelLog): Promise<KernelError | undefined> {
  const fd = await kernel.withBuffer(Buffer.byteLength(root) + 1, async (b) =>
    kernel.call(NR.openat, C.AT_FDCWD, b.cstring(root), C.O_RDONLY | C.O_DIRECTORY | C.O_CLOEXEC, 0),
  );
  const synced = fd < 0 ? fd : await kernel.call(NR.syncfs, fd);
  // EINVAL: directories there take no fsync, which tells nothing.
  const fsynced = synced === 0 ? await kernel.call(NR.fsync, fd) : 0;
  if (fd >= 0) await kernel.call(NR.close, fd);
  let e: KernelError;
  let why: string;
  if (synced < 0) {
    e = new KernelError(-synced, 'syncfs', image);
    why = `what was written may not all be in the image: ${e.code} (${errnoMessage(-synced)})${hostFull(image)}`;
  } else if (fsynced === -ERRNO.EIO) {
    e = new KernelError(ERRNO.EIO, 'fsync', image);
    why = 'the filesystem shut itself down after an error: what was written may not all be in the image';
  } else if (await readOnlyNow(kernel, root)) {
    e = new KernelError(ERRNO.EROFS, 'statfs', image);
    why = 'the filesystem went read-only after an error: what was written may not all be in the image';
  } else {
    return undefined;
  }
  e.message = `${image}: ${why}${await log.said()}`;
  return e;
}

export async function openImage(o: ImageOptions): Promise<MountedImage> {
  if (o.create && !existsSync(o.image)) {
    if (!o.type || o.type === 'auto') throw new Error('--create needs a filesystem type (-t)');
    createImage(o.image, o.create, o.type);
  }
  const kernel = await Kernel.boot({
    memory: `${o.memoryMb ?? 256}M`,
    console: o.printk ? 'inherit' : 'memory',
    cmdline: o.printk ? 'loglevel=7' : undefined,
  });
  try {
    const disk = await kernel.addDisk(o.image, { readOnly: o.readOnly, partition: o.partition });
    const root = await kernel.mount(disk, {
      type: o.type ?? 'auto',
      partition: o.partition ?? 0,
      readOnly: o.readOnly,
      options: o.options,
      warn: o.warn,
    });
    // Watched from here: writes fail in the background, long before close.
    // Only a filesystem mounted read-write takes writes (squashfs, say,
    // mounts read-only when asked for read-write).
    const writable = !o.readOnly && !(await readOnlyNow(kernel, root));
    const log = writable ? await watchKernelLog(kernel) : undefined;
    let closing: Promise<void> | undefined;
    return {
      kernel,
      disk,
      root,
      close: () =>
        (closing ??= (async () => {
          // What was written must be in the image: a write the host
          // refused (its disk full, say) is told, not lost in silence.
          const failed = log && (await syncImage(kernel, root, o.image, log));
          await log?.close();
          // Calls still in flight keep it busy for a moment: wait for them.
          // Failing that, the disk stays: the kernel's halt closes every
          // file and unmounts it, where pulling the disk would abort the
          // file system's journal.
          for (let tries = 0; ; tries++) {
            try {
              await kernel.umount(root);
              await disk.remove().catch(() => undefined);
              break;
            } catch (e) {
              if ((e as NodeJS.ErrnoException).code !== 'EBUSY' || tries === UMOUNT_TRIES) break;
              await new Promise((r) => setTimeout(r, 100));
            }
          }
          await kernel.shutdown();
          if (failed) throw failed;
        })()),
    };
  } catch (e) {
    await kernel.shutdown().catch(() => undefined);
    throw e;
  }
}

/**
 * Where `path`, named from the root of an image mounted at `root`, is in
 * the kernel.  As in a chroot, '..' stops at the image's root and symlinks
 * on the way resolve inside the image, absolute ones too (an image's
 * /var/run -> /run is its own /run, not the helper kernel's).  The last
 * component is followed only with `followLast`.  When the path does not
 * exist (yet), its parent is resolved and its name appended.
 */
export async function resolveInImage(k: Kernel, root: string, path: string, followLast: boolean): Promise<string> {
  const rel = posix.normalize(`/${path}`).replace(/^\/+|\/+$/g, '');
  if (!rel) return root;
  const rootFd = await k.fs.open(root, C.O_PATH | C.O_DIRECTORY);
  const where = async (p: string, follow: boolean) => {
    // The buffer is given back before readlink takes one (see withBuffer).
    const fd = await k.withBuffer(STRUCTS.open_how.size + 4096, async (buf) => {
      const how = STRUCTS.open_how.fields;
      buf.bytes.fill(0, 0, STRUCTS.open_how.size);
      buf.bytes.writeBigUInt64LE(BigInt(C.O_PATH | C.O_CLOEXEC | (follow ? 0 : C.O_NOFOLLOW)), how.flags[0]);
      buf.bytes.writeBigUInt64LE(BigInt(RESOLVE_IN_ROOT), how.resolve[0]);
      const name = buf.address + STRUCTS.open_how.size;
      buf.bytes.write(`${p}\0`, STRUCTS.open_how.size);
      const fd = await k.call(NR.openat2, rootFd.fd, name, buf.address, STRUCTS.open_how.size);
      if (fd < 0) {
        // Named as the caller knows it: from the image's root.
        const e = new KernelError(-fd, 'openat2', `/${p}`);
        e.message = `/${p}: ${errnoMessage(-fd)} in the image (${e.code})`;
        throw e;
      }
      return fd;
    });
    try {
      return await k.fs.readlink(`/proc/self/fd/${fd}`);
    } finally {
      await k.call(NR.close, fd);
    }
  };
  try {
    return await where(rel, followLast);
  } catch (e) {
    if ((e as KernelError).code !== 'ENOENT') throw e;
    const parent = posix.dirname(rel);
    return `${parent === '.' ? root : await where(parent, true)}/${posix.basename(rel)}`;
  } finally {
    await rootFd.close();
  }
}
