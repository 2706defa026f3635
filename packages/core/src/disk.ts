// Disks: image files plugged into the kernel as virtio-blk devices, their
// partitions as the kernel's own partition scan sees them, and mounting
// them, with 'auto' finding the filesystem.
import { closeSync, constants as hostConstants, openSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { errnoMessage, KernelError } from './errors';
import { host } from './host';
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

export interface AddDiskOptions {
  /** Open the image read-only; the kernel sees a read-only disk. */
  readOnly?: boolean;
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
      throw new KernelError(ENODEV, 'mount', `${this.image}: no partition ${partition} (partitions: ${have})`);
    }
    return p.path;
  }

  /** Unplugs it.  Unmount its filesystems first. */
  async remove(): Promise<void> {
    if (this.#removed) return;
    for (const m of await this.kernel.mounts()) {
      if (m.source === this.path || m.source.startsWith(this.path)) {
        throw new KernelError(EBUSY, 'remove', `${this.image}: mounted at ${m.target}`);
      }
    }
    const ret = await this.kernel.call(CALL_REMOVE_DISK, this.id);
    if (ret < 0) throw new KernelError(-ret, 'remove', this.image);
    this.#removed = true;
  }
}

/* Opens the image on the host, with a clear error when it cannot be. */
function openImage(image: string | number, readOnly: boolean): { fd: number; close: boolean; name: string } {
  if (typeof image === 'number') return { fd: image, close: false, name: `fd ${image}` };
  try {
    const st = statSync(image);
    if (st.isDirectory()) throw new KernelError(21 /* EISDIR */, 'addDisk', image);
    return { fd: openSync(image, readOnly ? 'r' : 'r+'), close: true, name: image };
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err instanceof KernelError) throw err;
    if (!readOnly && (err.code === 'EACCES' || err.code === 'EROFS' || err.code === 'EPERM')) {
      try {
        closeSync(openSync(image, hostConstants.O_RDONLY));
      } catch {
        throw new KernelError(EACCES, 'addDisk', image);
      }
      const ro = new KernelError(EROFS, 'addDisk', image);
      ro.message = `${image}: the image is read-only (no write permission here): add it with { readOnly: true }`;
      throw ro;
    }
    throw new KernelError(-(err.errno ?? -5), 'addDisk', image);
  }
}

/** How long addDisk waits for an image another kernel is using. */
const IMAGE_LOCK_TIMEOUT_MS = 15000;

/*
 * Locks the image for the kernel (flock: shared to read, exclusive to
 * write), on the open file it is given, so that the lock lasts as long as
 * the kernel process holds it.  Another lkl-um kernel using the image (an
 * lklfuse mount, or one still syncing after its unmount) makes it wait,
 * then fail.
 */
async function lockImage(fd: number, readOnly: boolean, name: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!host.tryLock(fd, !readOnly)) {
    // Mounted, not syncing: no use waiting.
    const mountpoint = lklfuseMountOf(name);
    if (mountpoint !== undefined) {
      const e = new KernelError(EBUSY, 'addDisk', name);
      e.message = `${name}: mounted by lklfuse on ${mountpoint} (EBUSY): unmount it first (fusermount3 -u ${mountpoint})`;
      throw e;
    }
    if (Date.now() > deadline) {
      const e = new KernelError(EBUSY, 'addDisk', name);
      e.message = `${name}: in use by another lkl-um kernel (an lklfuse mount, or one still syncing after its unmount)`;
      throw e;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/* Where an lklfuse mount of `image` is, from the host's mount table; undefined if none is. */
function lklfuseMountOf(image: string): string | undefined {
  let path: string;
  let mounts: string;
  try {
    path = realpathSync(image);
    mounts = readFileSync('/proc/self/mounts', 'utf8');
  } catch {
    return undefined;
  }
  // lklfuse names its mount after the image, commas made '_'; fields escape
  // spaces and the like as octal.
  const unescape = (field: string) => field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  const source = path.replace(/,/g, '_');
  for (const line of mounts.split('\n')) {
    const [from, on, type] = line.split(' ');
    if (type === 'fuse.lklfuse' && unescape(from) === source) return unescape(on);
  }
  return undefined;
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
  throw new KernelError(ENODEV, 'addDisk', `virtio-mmio.${id} has no block device`);
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

export async function addDisk(kernel: Kernel, image: string | number, options: AddDiskOptions = {}): Promise<Disk> {
  const readOnly = !!options.readOnly;
  const opened = openImage(image, readOnly);
  let id: number;
  try {
    await lockImage(opened.fd, readOnly, opened.name, options.lockTimeoutMs ?? IMAGE_LOCK_TIMEOUT_MS);
    const token = kernel.sendFd(opened.fd);
    id = await kernel.call(CALL_ADD_DISK, token, readOnly ? DISK_READONLY : 0);
  } finally {
    if (opened.close) closeSync(opened.fd);
  }
  if (id < 0) {
    const e = new KernelError(-id, 'addDisk', opened.name);
    if (-id === 22) e.message = `${opened.name}: not a disk image (a regular file or a block device)`;
    throw e;
  }
  const name = await blockName(kernel, id);
  const sectors = Number(await readSys(kernel, `/sys/block/${name}/size`));
  return new Disk(kernel, id, name, sectors * 512, readOnly, await partitionsOf(kernel, name), opened.name);
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

/** The block filesystems the kernel knows, from /proc/filesystems. */
async function blockFilesystems(kernel: Kernel): Promise<string[]> {
  const text = await kernel.fs.readFile('/proc/filesystems', 'utf8');
  return text
    .split('\n')
    .filter((l) => l && !l.startsWith('nodev'))
    .map((l) => l.trim())
    .filter((t) => !['ext2', 'ext3', 'fuseblk'].includes(t)); // ext4 mounts those
}

/* The kernel's messages since `from` (a /dev/kmsg fd), one line each. */
async function kernelMessages(kernel: Kernel, kmsg: number): Promise<string[]> {
  const lines: string[] = [];
  await kernel.withBuffer(8192, async (buf) => {
    for (;;) {
      const n = await kernel.call(NR.read, kmsg, buf.address, 8192);
      if (n <= 0) break;
      const record = buf.bytes.subarray(0, n).toString('utf8');
      lines.push(record.slice(record.indexOf(';') + 1).trim());
    }
  });
  return lines;
}

export async function mount(kernel: Kernel, disk: Disk, options: MountOptions = {}): Promise<string> {
  const device = disk.device(options.partition ?? 0);
  const target = options.target ?? `/mnt/${device.slice('/dev/'.length)}`;
  const readOnly = !!options.readOnly || disk.readOnly;
  const flags = readOnly ? C.MS_RDONLY : 0;
  await kernel.fs.mkdir(target, { recursive: true });

  let types: string[];
  if (options.type && options.type !== 'auto') {
    types = [options.type];
  } else {
    const found = await probeType(kernel, device);
    const all = await blockFilesystems(kernel);
    types = found ? [found, ...all.filter((t) => t !== found)] : all;
  }

  // Watch the kernel log, to tell what went wrong in its own words.
  const kmsg = await kernel.withBuffer(16, async (b) =>
    kernel.call(NR.openat, C.AT_FDCWD, b.cstring('/dev/kmsg'), C.O_RDONLY | C.O_NONBLOCK | C.O_CLOEXEC, 0),
  );
  if (kmsg >= 0) await kernel.call(NR.lseek, kmsg, 0, C.SEEK_END);
  const tried: string[] = [];
  try {
    for (const type of types) {
      let ret = await kernel.mountRaw(device, target, type, flags, options.options);
      // A journal to replay, which a read-only disk cannot take: mounted as
      // `mount -o ro,norecovery` would, without what the journal holds.
      if (-ret === EROFS && readOnly && JOURNALED.has(type)) {
        const norecovery = options.options ? `${options.options},norecovery` : 'norecovery';
        ret = await kernel.mountRaw(device, target, type, flags, norecovery);
      }
      if (ret === 0) return target;
      tried.push(`${type}: ${new KernelError(-ret, 'mount').code}`);
      if (-ret === EACCES && !readOnly) {
        const e = new KernelError(EROFS, 'mount', `${disk.image}`);
        e.message = `${disk.image}: the disk is read-only: mount it with { readOnly: true }`;
        throw e;
      }
      if (options.type && options.type !== 'auto') {
        const said = kmsg >= 0 ? await kernelMessages(kernel, kmsg) : [];
        const e = new KernelError(-ret, 'mount', `${device} on ${target} as ${type}`);
        // Named as the caller knows it: the image, not the kernel's device.
        e.message = `${disk.image}${options.partition ? ` partition ${options.partition}` : ''}: cannot mount as ${type}: ${e.code} (${errnoMessage(-ret)})`;
        if (said.length) e.message += `; the kernel said: ${said.join(' / ')}`;
        throw e;
      }
    }
    const said = kmsg >= 0 ? await kernelMessages(kernel, kmsg) : [];
    const e = new KernelError(22 /* EINVAL */, 'mount', `${device} on ${target}`);
    e.message =
      `${disk.image}${options.partition ? ` partition ${options.partition}` : ''}: no filesystem the kernel ` +
      `knows; tried ${tried.join(', ')}` + (said.length ? `; the kernel said: ${said.join(' / ')}` : '');
    throw e;
  } finally {
    if (kmsg >= 0) await kernel.call(NR.close, kmsg);
  }
}
