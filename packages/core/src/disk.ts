// Disks: image files plugged into the kernel as virtio-blk devices, their
// partitions as the kernel's own partition scan sees them, and mounting
// them, with 'auto' finding the filesystem.
import { closeSync, fstatSync, constants as hostConstants, openSync, readSync, statSync } from 'node:fs';
import { errnoMessage, errnoName, explainedError, KernelError } from './errors';
import { host } from './host';
import { FileId, fuseServerWriting, hostMountOf, lklfuseMountOf, loopFileOf } from './host-mounts';
import { CONSTANTS as C, SYSCALLS as NR } from './generated/abi';
import type { Kernel } from './kernel';

/** Calls for the kernel process's host part (native/include/lkl_um/protocol.h). */
const CALL_ADD_DISK = -1;
const CALL_REMOVE_DISK = -2;
const DISK_READONLY = 1;

const EBUSY = 16;
const EROFS = 30;
/** File systems with a journal that a read-only mount may skip (norecovery). */
const JOURNALED = new Set(['ext3', 'ext4', 'xfs']);
const EACCES = 13;
const ENODEV = 19;
const EINVAL = 22;
const EPIPE = 32;

export interface AddDiskOptions {
  /** Open the image read-only; the kernel sees a read-only disk. */
  readOnly?: boolean;
  /**
   * The partition this kernel will use (1 is the first): only its bytes
   * are locked, so that other kernels may use the others at the same
   * time; mount() then mounts no other.  0 or absent: the whole disk.
   */
  partition?: number;
  /**
   * How long to wait for another lkl-um kernel that uses the image (to
   * write, or this one would write) before failing with EBUSY; 15 s.
   */
  lockTimeoutMs?: number;
}

export interface Partition {
  /** Its number in the table: 1 for vda1. */
  number: number;
  /** The kernel's name for it: 'vda1'. */
  name: string;
  /** Its device node in the kernel: '/dev/vda1'. */
  path: string;
  /** Where it starts on the disk, and its size, in bytes. */
  start: number;
  size: number;
}

export interface MountOptions {
  /** The partition to mount, by number; 0 or absent: the whole disk. */
  partition?: number;
  /** The filesystem type, or 'auto' (the default) to find it. */
  type?: string;
  /** Filesystem options, as mount -o takes them: 'noatime,discard'. */
  options?: string;
  readOnly?: boolean;
  /** Where to mount it in the kernel; default /mnt/<device name>. */
  target?: string;
  /**
   * Told what is no error but may surprise (reading an image the host
   * writes); default process.emitWarning.
   */
  warn?: (message: string) => void;
}

/** A disk image plugged into the kernel. */
export class Disk {
  #removed = false;

  constructor(
    private readonly kernel: Kernel,
    /** The kernel process's id for it. */
    readonly id: number,
    /** The kernel's name for it: 'vda'. */
    readonly name: string,
    /** Its size in bytes. */
    readonly size: number,
    readonly readOnly: boolean,
    /** Its partitions, MBR or GPT, as the kernel found them. */
    readonly partitions: Partition[],
    /** The image it serves, as given. */
    readonly image: string,
    /** The partition it was added for, the only one locked; 0 the whole disk. */
    readonly lockedPartition = 0,
    /** The image as a file (and its device number, when it is a block device). */
    readonly file?: FileId & { rdev?: bigint },
  ) {}

  /** Its device node in the kernel: '/dev/vda'. */
  get path(): string {
    return `/dev/${this.name}`;
  }

  /** The device node of partition n, or of the whole disk for 0. */
  device(partition = 0): string {
    if (!partition) return this.path;
    const p = this.partitions.find((x) => x.number === partition);
    if (!p) {
      const have = this.partitions.map((x) => x.number).join(', ') || 'none';
      throw explainedError(ENODEV, 'mount', `${this.image}: no partition ${partition} (ENODEV; its partitions: ${have})`, this.image);
    }
    return p.path;
  }

  /** Unplugs it.  Unmount its filesystems first. */
  async remove(): Promise<void> {
    if (this.#removed) return;
    for (const m of await this.kernel.mounts()) {
      // The disk, or one of its partitions (vda1; vdaa is another disk).
      if (m.source === this.path || /^p?\d+$/.test(m.source.slice(this.path.length)) && m.source.startsWith(this.path)) {
        throw explainedError(EBUSY, 'remove', `${this.image}: mounted at ${m.target} (EBUSY): unmount it first`, this.image);
      }
    }
    const ret = await this.kernel.call(CALL_REMOVE_DISK, this.id);
    if (ret < 0) throw new KernelError(-ret, 'remove', this.image);
    this.#removed = true;
    disksOf.get(this.kernel)?.delete(this);
  }
}

/* An error about the image file, named as the caller named it. */
function imageError(errno: number, image: string, what = errnoMessage(errno)): KernelError {
  return explainedError(errno, 'addDisk', `${image}: ${what} (${errnoName(errno)})`, image);
}

/* Opens the image on the host, with a clear error when it cannot be. */
function openImage(image: string | number, readOnly: boolean): { fd: number; close: boolean; name: string } {
  if (typeof image === 'number') return { fd: image, close: false, name: `fd ${image}` };
  try {
    const st = statSync(image);
    if (st.isDirectory()) throw imageError(21 /* EISDIR */, image, 'a directory, not a disk image');
    return { fd: openSync(image, readOnly ? 'r' : 'r+'), close: true, name: image };
  } catch (caught) {
    const err = caught as NodeJS.ErrnoException;
    if (err instanceof KernelError) throw err;
    if (!readOnly && (err.code === 'EACCES' || err.code === 'EROFS' || err.code === 'EPERM')) {
      try {
        closeSync(openSync(image, hostConstants.O_RDONLY));
      } catch {
        throw imageError(EACCES, image);
      }
      // Said for the commands too: the library's { readOnly: true } is in the docs.
      throw explainedError(EROFS, 'addDisk', `${image}: no permission to write it here (EROFS): it can only be read`, image);
    }
    throw imageError(-(err.errno ?? -5), image);
  }
}

/** How long addDisk waits for an image another kernel is using. */
const IMAGE_LOCK_TIMEOUT_MS = 15000;

/* The partition table's bytes: MBR, GPT's header and entries (the first 34 sectors), GPT's backup (the last 33). */
const TABLE_HEAD = 34 * 512;
const TABLE_TAIL = 33 * 512;

/* Whether the image has a GPT: its header's signature in the second sector (of 512 or 4096 bytes). */
function isGpt(fd: number): boolean {
  const signature = Buffer.alloc(8);
  return [512, 4096].some((at) => {
    try {
      return readSync(fd, signature, 0, 8, at) === 8 && signature.toString('latin1') === 'EFI PART';
    } catch {
      return false;
    }
  });
}

/** What a lock is for: the image's bytes, shared (to read) or exclusive, and whose. */
interface LockRequest {
  fd: number;
  shared: boolean;
  start: number;
  /** 0: to the end. */
  length: number;
  /** The image, as named, and as a file. */
  name: string;
  file: FileId;
  /** The partition the kernel will use, 0 the whole disk: an lklfuse mount of it, or of the whole disk, holds it. */
  partition: number;
}

/*
 * Locks bytes of the image, on the open file the kernel was given: an open
 * file description lock, so that it lasts as long as the kernel process
 * holds the file.  Another lkl-um kernel using those bytes (an lklfuse
 * mount, or one still syncing after its unmount) makes it wait, then fail.
 */
async function lockImage(lock: LockRequest, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!host.tryLockRange(lock.fd, !lock.shared, lock.start, lock.length)) {
    // Mounted, not syncing: no use waiting.
    const mountpoint = lklfuseMountOf(lock.file, lock.partition);
    const part = lock.partition ? ` partition ${lock.partition}` : '';
    if (mountpoint !== undefined) {
      const e = new KernelError(EBUSY, 'addDisk', lock.name);
      e.message = `${lock.name}${part}: mounted by lklfuse on ${mountpoint} (EBUSY): unmount it first (lklfuse -u ${mountpoint})`;
      throw e;
    }
    if (Date.now() > deadline) {
      const e = new KernelError(EBUSY, 'addDisk', lock.name);
      e.message = `${lock.name}${part}: in use by another lkl-um kernel (an lklfuse mount, or one still syncing after its unmount)`;
      throw e;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A loop device's file, open to lock the bytes the device holds there too. */
interface LoopFile {
  fd: number;
  path: string;
  file: FileId;
  offset: number;
  /** Infinity: to the end of the file. */
  size: number;
}

/*
 * The file of the loop device `rdev`, if it is one: a kernel using the
 * file and one using the device write the same bytes, so both lock them
 * in the file.  The kernel process keeps it open with the disk, and so
 * the locks (it never reads it).  One we may not open goes unlocked.
 */
function openLoopFile(rdev: bigint, readOnly: boolean): LoopFile | undefined {
  const loop = loopFileOf(rdev);
  if (!loop) return undefined;
  try {
    const fd = openSync(loop.path, readOnly ? 'r' : 'r+');
    const st = fstatSync(fd, { bigint: true });
    return { ...loop, fd, file: { dev: st.dev, ino: st.ino } };
  } catch {
    return undefined;
  }
}

async function readSys(kernel: Kernel, path: string): Promise<string> {
  return (await kernel.fs.readFile(path, 'utf8')).trim();
}

/* Finds the block device the kernel made for platform device virtio-mmio.<id>. */
async function blockName(kernel: Kernel, id: number): Promise<string> {
  const platform = `/sys/bus/platform/devices/virtio-mmio.${id}`;
  for (const entry of await kernel.fs.readdir(platform)) {
    if (!entry.startsWith('virtio')) continue;
    const names = await kernel.fs.readdir(`${platform}/${entry}/block`).catch(() => []);
    if (names.length) return names[0];
  }
  throw explainedError(ENODEV, 'addDisk', `ENODEV: the kernel's virtio-mmio.${id} has no block device`);
}

async function partitionsOf(kernel: Kernel, name: string): Promise<Partition[]> {
  const parts: Partition[] = [];
  for (const entry of await kernel.fs.readdir(`/sys/block/${name}`)) {
    if (!entry.startsWith(name)) continue;
    const dir = `/sys/block/${name}/${entry}`;
    const [number, start, size] = await Promise.all(
      ['partition', 'start', 'size'].map((f) => readSys(kernel, `${dir}/${f}`)),
    );
    parts.push({
      number: Number(number),
      name: entry,
      path: `/dev/${entry}`,
      start: Number(start) * 512,
      size: Number(size) * 512,
    });
  }
  return parts.sort((a, b) => a.number - b.number);
}

/* The disks each kernel has, to tell that an image is added twice to one. */
const disksOf = new WeakMap<Kernel, Set<Disk>>();

/*
 * The same bytes of an image twice in one kernel, one of them for writing:
 * its own lock refuses the second, which would wait, then blame another
 * kernel.  Said at once.
 */
function refuseAddedTwice(kernel: Kernel, file: FileId, partition: number, readOnly: boolean, name: string): void {
  for (const disk of disksOf.get(kernel) ?? []) {
    const theirs = disk.lockedPartition ?? 0;
    if (disk.file?.dev !== file.dev || disk.file.ino !== file.ino) continue;
    if ((partition && theirs && partition !== theirs) || (readOnly && disk.readOnly)) continue; // no conflict: readers share
    const e = new KernelError(EBUSY, 'addDisk', name);
    e.message = `${name}: already added to this kernel, as ${disk.name}${theirs ? ` for partition ${theirs}` : ''} (EBUSY): use that disk, or remove it first`;
    throw e;
  }
}

export async function addDisk(kernel: Kernel, image: string | number, options: AddDiskOptions = {}): Promise<Disk> {
  const readOnly = !!options.readOnly;
  const opened = openImage(image, readOnly);
  let loopFile: LoopFile | undefined;
  try {
    const st = fstatSync(opened.fd, { bigint: true });
    const file = { dev: st.dev, ino: st.ino };
    refuseAddedTwice(kernel, file, options.partition ?? 0, readOnly, opened.name);
    const timeout = options.lockTimeoutMs ?? IMAGE_LOCK_TIMEOUT_MS;
    const partition = options.partition ?? 0;
    loopFile = st.isBlockDevice() ? openLoopFile(st.rdev, readOnly) : undefined;
    const lock = async (shared: boolean, start: number, length: number) => {
      await lockImage({ fd: opened.fd, shared, start, length, name: opened.name, file, partition }, timeout);
      if (!loopFile) return;
      const { fd, offset, size, path } = loopFile;
      const rest = Number.isFinite(size) ? size - start : 0; // 0: to the end
      const name = `${opened.name} (a loop device of ${path})`;
      await lockImage({ fd, shared, start: offset + start, length: length || rest, name, file: loopFile.file, partition: 0 }, timeout);
    };
    // The whole disk is locked at once, before the kernel reads it (never
    // an upgrade: two kernels upgrading would wait for each other). For one
    // partition, the partition table is held still meanwhile, and after.
    await lock(partition ? true : readOnly, 0, partition ? TABLE_HEAD : 0);
    const held = loopFile ? kernel.sendFd(loopFile.fd) : 0;
    const id = await kernel.call(CALL_ADD_DISK, kernel.sendFd(opened.fd), readOnly ? DISK_READONLY : 0, held);
    if (id < 0) {
      const e = new KernelError(-id, 'addDisk', opened.name);
      if (-id === 22) e.message = `${opened.name}: not a disk image (a regular file or a block device)`;
      throw e;
    }
    const name = await blockName(kernel, id);
    const size = Number(await readSys(kernel, `/sys/block/${name}/size`)) * 512;
    const disk = new Disk(kernel, id, name, size, readOnly, await partitionsOf(kernel, name), opened.name, partition, {
      ...file,
      rdev: st.isBlockDevice() ? st.rdev : undefined,
    });
    if (partition) {
      try {
        // The kernel has only read the partition table: the partition is locked before any more.
        const part = disk.partitions.find((p) => p.number === partition);
        if (!part) disk.device(partition); // throws: no such partition
        // GPT's backup table (on an MBR disk those sectors are the last partition's).
        if (isGpt(opened.fd) && size > TABLE_HEAD + TABLE_TAIL) await lock(true, size - TABLE_TAIL, TABLE_TAIL);
        await lock(readOnly, part!.start, part!.size);
      } catch (e) {
        await disk.remove().catch(() => undefined);
        throw e;
      }
    }
    if (!disksOf.has(kernel)) disksOf.set(kernel, new Set());
    disksOf.get(kernel)!.add(disk);
    return disk;
  } finally {
    // The kernel process has its own copies of the open files, and so of their locks.
    if (opened.close) closeSync(opened.fd);
    if (loopFile) closeSync(loopFile.fd);
  }
}

// --- finding the filesystem ----------------------------------------------------

interface Magic {
  type: string;
  offset: number;
  bytes: Buffer;
}

const magic = (type: string, offset: number, bytes: string | number[]): Magic => ({
  type,
  offset,
  bytes: Buffer.from(bytes as string, typeof bytes === 'string' ? 'latin1' : undefined),
});

/* What blkid looks for, for the filesystems the kernel has; the first match wins. */
const MAGICS: Magic[] = [
  magic('ext4', 0x438, [0x53, 0xef]),
  magic('btrfs', 0x10040, '_BHRfS_M'),
  magic('xfs', 0, 'XFSB'),
  magic('f2fs', 0x400, [0x10, 0x20, 0xf5, 0xf2]),
  magic('erofs', 0x400, [0xe2, 0xe1, 0xf5, 0xe0]),
  magic('squashfs', 0, 'hsqs'),
  magic('exfat', 3, 'EXFAT   '),
  magic('ntfs3', 3, 'NTFS    '),
  magic('udf', 0x8001 + 2048, 'NSR02'),
  magic('udf', 0x8001 + 2048, 'NSR03'),
  magic('udf', 0x8001 + 4096, 'NSR02'),
  magic('udf', 0x8001 + 4096, 'NSR03'),
  magic('iso9660', 0x8001, 'CD001'),
  magic('vfat', 0x52, 'FAT32   '),
  magic('vfat', 0x36, 'FAT16   '),
  magic('vfat', 0x36, 'FAT12   '),
  magic('vfat', 0x36, 'FAT     '),
];

const PROBE_BYTES = 0x10100;

/** The filesystem type on a kernel block device, from its magic, or undefined. */
export async function probeType(kernel: Kernel, device: string): Promise<string | undefined> {
  const fh = await kernel.fs.open(device, 'r');
  try {
    const head = Buffer.alloc(PROBE_BYTES);
    const { bytesRead } = await fh.read(head, 0, PROBE_BYTES, 0);
    for (const m of MAGICS) {
      if (m.offset + m.bytes.length <= bytesRead && head.subarray(m.offset, m.offset + m.bytes.length).equals(m.bytes)) {
        return m.type;
      }
    }
    return undefined;
  } finally {
    await fh.close();
  }
}

/*
 * The names users give filesystems whose driver here has another: NTFS is
 * ntfs3 (the old read-only ntfs driver left Linux in 6.9).
 */
const TYPE_ALIASES: Record<string, string> = { ntfs: 'ntfs3' };

/** The kernel's name for filesystem type `type`: 'ntfs' -> 'ntfs3'. */
export function kernelTypeOf(type: string): string {
  return TYPE_ALIASES[type] ?? type;
}

/* Files people take for disk images: by their first bytes, what they are and what to do. */
const NOT_IMAGES: { at: number; magic: string; what: string; todo?: string }[] = [
  { at: 0, magic: '1f8b', what: 'gzip-compressed', todo: 'gunzip it first' },
  { at: 0, magic: 'fd377a585a00', what: 'xz-compressed', todo: 'unxz it first' },
  { at: 0, magic: '28b52ffd', what: 'zstd-compressed', todo: 'unzstd it first' },
  { at: 0, magic: '425a68', what: 'bzip2-compressed', todo: 'bunzip2 it first' },
  { at: 0, magic: '514649fb', what: 'a qcow2 image', todo: 'qemu-img convert -O raw it first' },
  { at: 0, magic: '4b444d56', what: 'a VMDK image', todo: 'qemu-img convert -O raw it first' },
  { at: 0, magic: '7668647866696c65', what: 'a VHDX image', todo: 'qemu-img convert -O raw it first' },
  { at: 257, magic: '7573746172', what: 'a tar archive' },
];

/* What the file at `path` is, and what to do, when it is a known kind of file that is not a disk image. */
function notAnImage(path: string): string | undefined {
  const head = Buffer.alloc(262);
  try {
    const fd = openSync(path, 'r');
    try {
      readSync(fd, head, 0, head.length, 0);
    } finally {
      closeSync(fd);
    }
  } catch {
    return undefined;
  }
  const kind = NOT_IMAGES.find((k) => head.subarray(k.at, k.at + k.magic.length / 2).toString('hex') === k.magic);
  return kind && `${kind.what}, not a filesystem image${kind.todo ? `: ${kind.todo}` : ''}`;
}

/** The block filesystems the kernel knows, from /proc/filesystems. */
async function blockFilesystems(kernel: Kernel): Promise<string[]> {
  const text = await kernel.fs.readFile('/proc/filesystems', 'utf8');
  return text
    .split('\n')
    .filter((l) => l && !l.startsWith('nodev'))
    .map((l) => l.trim())
    .filter((t) => !['ext2', 'ext3', 'fuseblk'].includes(t)); // ext4 mounts those
}

/** The kernel's log from now on, to tell what went wrong in its own words. */
export interface KernelLog {
  /** What it has said since (or since the last call): '; the kernel said: ...', or ''. */
  said(): Promise<string>;
  close(): Promise<void>;
}

/*
 * A /dev/kmsg record's text, as one line: the text ends at the first
 * newline (dictionary lines follow), and the kernel writes the bytes that
 * are not printable ASCII (a newline inside the message, UTF-8) as \xNN.
 */
function kmsgText(record: string): string {
  const escaped = record.slice(record.indexOf(';') + 1).split('\n')[0];
  const bytes = escaped.replace(/\\x([0-9a-f]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  return Buffer.from(bytes, 'latin1').toString('utf8').trim().replace(/\s*\n\s*/g, ' ');
}

/* The first lines are the telling ones: a failing disk says the same many times. */
const KERNEL_LOG_LINES = 6;

export async function watchKernelLog(kernel: Kernel): Promise<KernelLog> {
  const kmsg = await kernel.withBuffer(16, async (b) =>
    kernel.call(NR.openat, C.AT_FDCWD, b.cstring('/dev/kmsg'), C.O_RDONLY | C.O_NONBLOCK | C.O_CLOEXEC, 0),
  );
  if (kmsg >= 0) await kernel.call(NR.lseek, kmsg, 0, C.SEEK_END);
  const said = async () => {
    const lines: string[] = [];
    if (kmsg >= 0) {
      await kernel.withBuffer(8192, async (buf) => {
        for (;;) {
          const n = await kernel.call(NR.read, kmsg, buf.address, 8192);
          if (n === -EPIPE) {
            lines.push('(some lines lost)'); // the log went round past them
            continue;
          }
          if (n <= 0) break;
          lines.push(kmsgText(buf.bytes.subarray(0, n).toString('latin1')));
        }
      });
    }
    if (lines.length > KERNEL_LOG_LINES) lines.splice(KERNEL_LOG_LINES, lines.length, `(${lines.length - KERNEL_LOG_LINES} more)`);
    return lines.length ? `; the kernel said: ${lines.join(' / ')}` : '';
  };
  const close = async () => {
    if (kmsg >= 0) await kernel.call(NR.close, kmsg);
  };
  return { said, close };
}

/* A flag's two words: `on` sets `bit`, `off` clears it. */
const flagWords = (on: string, off: string, bit: number): Record<string, [set: number, clear: number]> => ({
  [on]: [bit, 0],
  [off]: [0, bit],
});

/*
 * The words of mount -o that are flags of the mount itself, not options of
 * the filesystem: each sets some MS_* bits and clears others.
 */
const MOUNT_FLAGS: Record<string, [set: number, clear: number]> = {
  defaults: [0, 0],
  ...flagWords('ro', 'rw', C.MS_RDONLY),
  ...flagWords('nosuid', 'suid', C.MS_NOSUID),
  ...flagWords('nodev', 'dev', C.MS_NODEV),
  ...flagWords('noexec', 'exec', C.MS_NOEXEC),
  ...flagWords('sync', 'async', C.MS_SYNCHRONOUS),
  ...flagWords('dirsync', 'nodirsync', C.MS_DIRSYNC),
  ...flagWords('nodiratime', 'diratime', C.MS_NODIRATIME),
  ...flagWords('lazytime', 'nolazytime', C.MS_LAZYTIME),
  ...flagWords('nosymfollow', 'symfollow', C.MS_NOSYMFOLLOW),
  ...flagWords('iversion', 'noiversion', C.MS_I_VERSION),
  ...flagWords('mand', 'nomand', C.MS_MANDLOCK),
  ...flagWords('silent', 'loud', C.MS_SILENT),
  // One of three atime policies.
  noatime: [C.MS_NOATIME, C.MS_RELATIME | C.MS_STRICTATIME],
  atime: [0, C.MS_NOATIME],
  relatime: [C.MS_RELATIME, C.MS_NOATIME | C.MS_STRICTATIME],
  norelatime: [0, C.MS_RELATIME],
  strictatime: [C.MS_STRICTATIME, C.MS_NOATIME | C.MS_RELATIME],
  nostrictatime: [0, C.MS_STRICTATIME],
};

/* fstab's words for mount(8) itself: nothing for the kernel. */
const FSTAB_ONLY = new Set(['auto', 'noauto', 'user', 'nouser', 'users', 'owner', 'group', 'nofail', '_netdev']);

/** Whether a mount -o word is fstab's, for mount(8) alone (noauto, nofail, x-*, comment=...). */
export function isFstabOnly(word: string): boolean {
  return FSTAB_ONLY.has(word) || word.startsWith('x-') || word.startsWith('comment=');
}

/* Types whose files carry no modes: their drivers take the mounting process's umask, and the kernel's is 0. */
const UMASKED = new Set(['vfat', 'msdos', 'exfat', 'ntfs3']);

/**
 * A filesystem's options with this process's umask added where the type
 * takes one and none is given: as mount(8) run here would have it (vfat
 * files 0755 under umask 022, not 0777).
 */
export function withCallerUmask(type: string, data: string | undefined): string | undefined {
  if (!UMASKED.has(type) || /(^|,)(umask|fmask|dmask)=/.test(data ?? '')) return data;
  const umask = `umask=${process.umask().toString(8).padStart(3, '0')}`;
  return data ? `${data},${umask}` : umask;
}

/**
 * Splits mount -o text as mount(8) does: the mount's own flags (noatime,
 * nodev, ro, ...) into MS_* bits; the rest, the filesystem's options
 * (errors=remount-ro, discard, ...), into the text the filesystem is given.
 */
export function splitMountOptions(options: string | undefined): { flags: number; data: string | undefined } {
  let flags = 0;
  const data: string[] = [];
  for (const word of (options ?? '').split(',').filter(Boolean)) {
    const flag = MOUNT_FLAGS[word];
    if (flag) flags = (flags | flag[0]) & ~flag[1];
    else if (!isFstabOnly(word)) data.push(word);
  }
  return { flags, data: data.length ? data.join(',') : undefined };
}

/*
 * The host's own mount of what we would write (the partition, or the whole
 * disk) would be written behind our back, and ours behind its: refused.
 * Reading what the host writes is allowed, and warned of: what the host
 * has not written yet is not seen (a journal not yet replayed, say).
 */
function checkHostMounted(disk: Disk, partition: number, named: string, readOnly: boolean, warn: (message: string) => void): void {
  if (!disk.file) return;
  const part = disk.partitions.find((p) => p.number === partition);
  const mounted = hostMountOf(disk.file, disk.file.rdev, part ? { start: part.start, size: part.size } : { start: 0, size: disk.size });
  if (readOnly) {
    // Only the host's own mounts: the scan for FUSE servers reads every
    // process's fds, too much on every read for a warning.
    if (mounted && !mounted.readOnly) warn(`${named}: mounted read-write by the host on ${mounted.target}: what it has not written yet is not seen here`);
    return;
  }
  const server = mounted ? undefined : fuseServerWriting(disk.file);
  const e = new KernelError(EBUSY, 'mount', disk.image);
  if (mounted) {
    e.message = `${named}: mounted by the host on ${mounted.target} (${mounted.device}; EBUSY): unmount it there first (only reading it needs no unmount)`;
    throw e;
  }
  if (server) {
    e.message = `${named}: served by ${server.name} (pid ${server.pid}), a FUSE filesystem with it open for writing (EBUSY): unmount it first (only reading it needs no unmount)`;
    throw e;
  }
}

export async function mount(kernel: Kernel, disk: Disk, options: MountOptions = {}): Promise<string> {
  if (disk.lockedPartition && (options.partition ?? 0) !== disk.lockedPartition) {
    throw explainedError(EBUSY, 'mount', `${disk.image}: added for partition ${disk.lockedPartition} alone (the others are not locked): add it again to mount another`, disk.image);
  }
  const device = disk.device(options.partition ?? 0);
  const target = options.target ?? `/mnt/${device.slice('/dev/'.length)}`;
  const readOnly = !!options.readOnly || disk.readOnly;
  const { flags: optionFlags, data } = splitMountOptions(options.options);
  const flags = optionFlags | (readOnly ? C.MS_RDONLY : 0);
  const named = `${disk.image}${options.partition ? ` partition ${options.partition}` : ''}`;
  const warn = options.warn ?? ((m: string) => process.emitWarning(m));
  checkHostMounted(disk, options.partition ?? 0, named, readOnly, warn);
  if (!disk.size) {
    throw explainedError(EINVAL, 'mount', `${disk.image}: empty (0 bytes): no filesystem in it`, disk.image);
  }
  await kernel.fs.mkdir(target, { recursive: true });

  // As mount(8) with blkid: a signature found names the one type to try.
  const given = options.type && options.type !== 'auto' ? kernelTypeOf(options.type) : undefined;
  const found = given ? undefined : await probeType(kernel, device);
  const known = await blockFilesystems(kernel);
  if (given && !known.includes(given) && !['ext2', 'ext3'].includes(given)) {
    throw explainedError(ENODEV, 'mount', `${named}: unknown filesystem type '${given}' (the kernel has ${known.join(', ')})`, disk.image, target);
  }
  // A stale signature (an old filesystem's, not overwritten) must not hide
  // the real one: the others are tried after it, but its failure is the one told.
  const types = given ? [given] : found ? [found, ...known.filter((t) => t !== found)] : known;
  let foundFailed: KernelError | undefined;

  const log = await watchKernelLog(kernel);
  const tried: string[] = [];
  try {
    for (const type of types) {
      const typeData = withCallerUmask(type, data);
      let ret = await kernel.mountRaw(device, target, type, flags, typeData);
      // A journal to replay, which a read-only disk cannot take: mounted as
      // `mount -o ro,norecovery` would, without what the journal holds.
      if (-ret === EROFS && readOnly && JOURNALED.has(type)) {
        ret = await kernel.mountRaw(device, target, type, flags, typeData ? `${typeData},norecovery` : 'norecovery');
        if (ret === 0) {
          warn(
            `${named}: its ${type} journal needs replaying, which a read-only mount cannot do: ` +
              'shown without what the journal holds (the latest changes); mount it read-write, or fsck it, to see them',
          );
        }
      }
      // A filesystem the kernel only reads (iso9660) refuses read-write:
      // mounted read-only, as mount(8) does (squashfs does it itself).
      if (-ret === EACCES && !readOnly) ret = await kernel.mountRaw(device, target, type, flags | C.MS_RDONLY, typeData);
      if (ret === 0) return target;
      tried.push(`${type}: ${new KernelError(-ret, 'mount').code}`);
      if (type === given || type === found) {
        const e = new KernelError(-ret, 'mount', disk.image, target);
        // Named as the caller knows it: the image, not the kernel's device.
        e.message = `${named}: cannot mount as ${type}${given ? '' : ' (its signature)'}: ${e.code} (${errnoMessage(-ret)})`;
        e.message += await log.said();
        if (given) throw e;
        foundFailed = e;
      }
    }
    if (foundFailed) throw foundFailed;
    if (!options.partition && disk.partitions.length) {
      const e = new KernelError(EINVAL, 'mount', disk.image, target);
      const numbers = disk.partitions.map((p) => p.number).join(', ');
      e.message = `${named}: a partitioned disk (partitions ${numbers}): name the partition to mount (cptofs, fs2tar: -P N; lklfuse: -o part=N)`;
      throw e;
    }
    const e = new KernelError(EINVAL, 'mount', disk.image, target);
    const format = options.partition ? undefined : notAnImage(disk.image);
    e.message = format
      ? `${named}: ${format}`
      : `${named}: no filesystem the kernel knows; tried ${tried.join(', ')}${await log.said()}`;
    throw e;
  } finally {
    await log.close();
  }
}
