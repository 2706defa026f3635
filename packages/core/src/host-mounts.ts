// Who on the host has an image mounted: an lklfuse mount of it, the host
// kernel's own mount through a loop device or of the block device itself,
// or another FUSE filesystem's of the file (fuse2fs).
// Two kernels writing one filesystem lose data silently, so a writer is
// refused when either is found; the image lock covers only lkl-um kernels.
//
// Files are matched by device and inode (a bind mount or a symlink is the
// same file), block devices by number (a device node of another name is
// the same device), and a mount of part of the image (a partition, a loop
// device with an offset) only where it overlaps the part we would write.
import { readdirSync, readFileSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname } from 'node:path';

interface MountEntry {
  device: string; // major:minor
  source: string;
  target: string;
  type: string;
  /** The filesystem is read-only (its superblock's options say ro). */
  readOnly: boolean;
}

/** Bytes of the image: where a partition starts, and its size. */
export interface ByteRange {
  start: number;
  size: number;
}

/* mountinfo fields escape spaces, tabs, newlines and backslashes as octal. */
const unescapeField = (field: string) => field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

/* The host's mounts, from /proc/self/mountinfo. */
function hostMounts(): MountEntry[] {
  let text: string;
  try {
    text = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  const mounts: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    const dash = fields.indexOf('-');
    if (dash < 0) continue;
    mounts.push({
      device: fields[2],
      target: unescapeField(fields[4]),
      type: fields[dash + 1],
      source: unescapeField(fields[dash + 2]),
      readOnly: (fields[dash + 3] ?? '').split(',').includes('ro'),
    });
  }
  return mounts;
}

/* A sysfs file's text; `trim` false keeps all but the newline (a path may end in spaces). */
const readSys = (path: string, trim = true) => {
  try {
    const text = readFileSync(path, 'utf8');
    return trim ? text.trim() : text.replace(/\n$/, '');
  } catch {
    return undefined;
  }
};

/** A file by its identity: the same file by any path (a symlink, a bind mount). */
export interface FileId {
  dev: bigint;
  ino: bigint;
}

const fileId = (path: string): FileId | undefined => {
  try {
    const st = statSync(path, { bigint: true });
    return { dev: st.dev, ino: st.ino };
  } catch {
    return undefined;
  }
};
const sameFile = (a: FileId | undefined, b: FileId) => !!a && a.dev === b.dev && a.ino === b.ino;

/* The host's processes, by id. */
function processIds(): string[] {
  try {
    return readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  } catch {
    return [];
  }
}

/* An lklfuse server: its pid and the partition it serves (0: the whole disk). */
interface LklfuseServer {
  pid: number;
  partition: number;
}

/*
 * The lklfuse servers, by mount point, from their command lines (the mount
 * point last; --partition N).  A server this user cannot see (another
 * user's, with /proc's hidepid) is absent.
 */
function lklfuseServers(): Map<string, LklfuseServer> {
  const servers = new Map<string, LklfuseServer>();
  for (const pid of processIds()) {
    let args: string[];
    try {
      args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, -1);
    } catch {
      continue;
    }
    if (!args.length || basename(args[0]) !== 'lklfuse-server') continue;
    const at = args.indexOf('--partition');
    servers.set(args[args.length - 1], { pid: Number(pid), partition: at < 0 ? 0 : Number(args[at + 1]) });
  }
  return servers;
}

/**
 * The lklfuse mount on `target` (a real path), undefined if there is none:
 * its server's pid, when this user can see it.
 */
export function lklfuseMountAt(target: string): { server?: number } | undefined {
  if (!hostMounts().some((m) => m.target === target && m.type === 'fuse.lklfuse')) return undefined;
  return { server: lklfuseServers().get(target)?.pid };
}

/* Whether `source` is the image, or a loop device of it. */
function isImageOrLoop(source: string, image: FileId): boolean {
  if (sameFile(fileId(source), image)) return true;
  try {
    const st = statSync(source, { bigint: true });
    const loop = st.isBlockDevice() ? loopFileOf(st.rdev) : undefined;
    return !!loop && sameFile(fileId(loop.path), image);
  } catch {
    return false;
  }
}

/**
 * Where an lklfuse mount of the image (or of a loop device of it) is that
 * serves `partition` or overlaps it (the whole disk, or the same
 * partition; 0 is the whole disk), or undefined.  lklfuse names its mount
 * by the image's real path.
 */
export function lklfuseMountOf(image: FileId, partition: number): string | undefined {
  const mounts = hostMounts().filter((m) => m.type === 'fuse.lklfuse' && isImageOrLoop(m.source, image));
  if (!mounts.length) return undefined;
  const served = lklfuseServers();
  return mounts.find((m) => {
    const theirs = served.get(m.target)?.partition ?? 0;
    return !partition || !theirs || theirs === partition;
  })?.target;
}

/* A host block device holding the image's bytes from `offset` on (`size` of them; Infinity: to the end). */
interface Backing {
  name: string;
  offset: number;
  size: number;
}

/* The host's name for block device number `rdev` ('loop0p1'), if it has one. */
function deviceName(rdev: bigint): string | undefined {
  // glibc's major() and minor() of a dev_t.
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  try {
    return basename(realpathSync(`/sys/dev/block/${major}:${minor}`));
  } catch {
    return undefined;
  }
}

/**
 * The file a loop device reads (`rdev`: the device, or a partition of
 * one), and which of its bytes the device holds; undefined for any other
 * device, or a loop device whose file is gone.
 */
export function loopFileOf(rdev: bigint): { path: string; offset: number; size: number } | undefined {
  const name = deviceName(rdev);
  if (!name) return undefined;
  let loop = name;
  let start = 0;
  let size = Infinity;
  if (readSys(`/sys/class/block/${name}/partition`) !== undefined) {
    loop = basename(dirname(realpathSync(`/sys/class/block/${name}`)));
    start = Number(readSys(`/sys/class/block/${name}/start`) ?? 0) * 512;
    size = Number(readSys(`/sys/class/block/${name}/size`) ?? 0) * 512;
  }
  const path = readSys(`/sys/block/${loop}/loop/backing_file`, false);
  if (!path || !fileId(path)) return undefined;
  const limit = Number(readSys(`/sys/block/${loop}/loop/sizelimit`) ?? 0);
  if (size === Infinity && limit) size = limit;
  return { path, offset: Number(readSys(`/sys/block/${loop}/loop/offset`) ?? 0) + start, size };
}

/* The host's block devices for the image: the loop devices backed by it, or the device it is. */
function backingDevices(image: FileId, rdev: bigint | undefined): Backing[] {
  if (rdev !== undefined) {
    const name = deviceName(rdev);
    return name ? [{ name, offset: 0, size: Infinity }] : [];
  }
  const found: Backing[] = [];
  let names: string[];
  try {
    names = readdirSync('/sys/block').filter((n) => n.startsWith('loop'));
  } catch {
    return [];
  }
  for (const name of names) {
    const backing = readSys(`/sys/block/${name}/loop/backing_file`);
    if (!backing || !sameFile(fileId(backing), image)) continue;
    const limit = Number(readSys(`/sys/block/${name}/loop/sizelimit`) ?? 0);
    found.push({ name, offset: Number(readSys(`/sys/block/${name}/loop/offset`) ?? 0), size: limit || Infinity });
  }
  return found;
}

/* The device and its partitions, each with the bytes of the image it holds. */
function withPartitions(d: Backing): Backing[] {
  const parts: Backing[] = [d];
  let entries: string[];
  try {
    entries = readdirSync(`/sys/class/block/${d.name}`);
  } catch {
    return parts;
  }
  for (const entry of entries) {
    const start = readSys(`/sys/class/block/${d.name}/${entry}/start`);
    const size = readSys(`/sys/class/block/${d.name}/${entry}/size`);
    if (start === undefined || size === undefined) continue;
    parts.push({ name: entry, offset: d.offset + Number(start) * 512, size: Number(size) * 512 });
  }
  return parts;
}

/* A device, and every device stacked on it (device mapper, md), as names and numbers. */
function stack(name: string, names = new Set<string>(), numbers = new Set<string>()) {
  if (names.has(name)) return { names, numbers };
  names.add(name);
  const number = readSys(`/sys/class/block/${name}/dev`);
  if (number) numbers.add(number);
  let holders: string[] = [];
  try {
    holders = readdirSync(`/sys/class/block/${name}/holders`);
  } catch {
    // none
  }
  for (const holder of holders) stack(holder, names, numbers);
  return { names, numbers };
}

/**
 * Where the host has mounted bytes `range` of the image — through a loop
 * device backed by it (or a partition of one), through something stacked
 * on that, as the block device it is (`rdev`: the image is a block
 * device), or the file itself (fuse2fs, by its absolute path) — and
 * through what; undefined if nowhere.
 */
export function hostMountOf(
  image: FileId,
  rdev: bigint | undefined,
  range: ByteRange,
): { target: string; device: string; readOnly: boolean } | undefined {
  const mounts = hostMounts();
  // Resolved once: a source that is a path, to its real path and identity.
  const sources = new Map<string, { real: string; id?: FileId }>();
  const source = (path: string) => {
    let known = sources.get(path);
    if (!known) {
      let real = path;
      try {
        real = realpathSync(path);
      } catch {
        // not a path
      }
      known = { real, id: path.startsWith('/') ? fileId(path) : undefined };
      sources.set(path, known);
    }
    return known;
  };
  const itself = mounts.find((m) => m.type !== 'fuse.lklfuse' && rdev === undefined && sameFile(source(m.source).id, image));
  if (itself) return { target: itself.target, device: `${itself.type} of the file`, readOnly: itself.readOnly };

  const overlapping = backingDevices(image, rdev)
    .flatMap(withPartitions)
    .filter((d) => d.offset < range.start + range.size && range.start < d.offset + d.size);
  for (const d of overlapping) {
    const { names, numbers } = stack(d.name);
    const mount = mounts.find((m) => {
      if (numbers.has(m.device)) return true;
      // btrfs shows an anonymous number: its source names the device.
      const real = source(m.source).real;
      return real.startsWith('/dev/') && names.has(basename(real));
    });
    if (mount) return { target: mount.target, device: `/dev/${d.name}`, readOnly: mount.readOnly };
  }
  return undefined;
}

/**
 * A FUSE server (a process with /dev/fuse open) that has the image open
 * for writing: fuse2fs mounted by a relative path, which its mount keeps as
 * typed while the server has gone to /.  As far as /proc lets us see: all
 * processes as root, one's own otherwise.
 */
export function fuseServerWriting(image: FileId): { pid: number; name: string } | undefined {
  for (const pid of processIds()) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue; // gone, or not ours to see
    }
    const target = (fd: string) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        return '';
      }
    };
    if (!fds.some((fd) => target(fd) === '/dev/fuse')) continue;
    // lklfuse's server holds an image (a loop device's file) under locks: those tell.
    if (readSys(`/proc/${pid}/comm`) === 'lklfuse-server') continue;
    for (const fd of fds) {
      if (!sameFile(fileId(`/proc/${pid}/fd/${fd}`), image)) continue;
      const flags = /^flags:\s+([0-7]+)/m.exec(readSys(`/proc/${pid}/fdinfo/${fd}`) ?? '');
      if (flags && (parseInt(flags[1], 8) & 3) !== 0) return { pid: Number(pid), name: readSys(`/proc/${pid}/comm`) ?? '?' };
    }
  }
  return undefined;
}
