// Who on the host has an image mounted: an lklfuse mount of it, or the host
// kernel's own mount through a loop device or of the block device itself.
// Two kernels writing one filesystem lose data silently, so a writer is
// refused when either is found; the image lock covers only lkl-um kernels.
//
// Files are matched by device and inode (a bind mount or a symlink is the
// same file), block devices by number (a device node of another name is
// the same device), and a mount of part of the image (a partition, a loop
// device with an offset) only where it overlaps the part we would write.
import { readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { basename } from 'node:path';

interface MountEntry {
  device: string; // major:minor
  source: string;
  target: string;
  type: string;
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
    });
  }
  return mounts;
}

const readSys = (path: string) => {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
};

/** Where an lklfuse mount of `image` is (lklfuse names its mount by the image's real path). */
export function lklfuseMountOf(image: string): string | undefined {
  let path: string;
  try {
    path = realpathSync(image);
  } catch {
    return undefined;
  }
  return hostMounts().find((m) => m.type === 'fuse.lklfuse' && m.source === path)?.target;
}

/* A host block device holding the image's bytes from `offset` on (`size` of them; Infinity: to the end). */
interface Backing {
  name: string;
  offset: number;
  size: number;
}

/* The host's block devices for the file `image`: the loop devices backed by it, or the device it is. */
function backingDevices(image: string): Backing[] {
  const st = statSync(image, { throwIfNoEntry: false, bigint: true });
  if (!st) return [];
  if (st.isBlockDevice()) {
    // glibc's major() and minor() of a dev_t.
    const major = ((st.rdev >> 8n) & 0xfffn) | ((st.rdev >> 32n) & ~0xfffn);
    const minor = (st.rdev & 0xffn) | ((st.rdev >> 12n) & ~0xffn);
    const link = realpathSync(`/sys/dev/block/${major}:${minor}`);
    return [{ name: basename(link), offset: 0, size: Infinity }];
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
    const file = backing ? statSync(backing, { throwIfNoEntry: false, bigint: true }) : undefined;
    if (!file || file.dev !== st.dev || file.ino !== st.ino) continue;
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
 * Where the host kernel has mounted bytes `range` of `image` — through a
 * loop device backed by it (or a partition of one), through something
 * stacked on that, or as the block device it is — and through which
 * device; undefined if nowhere.
 */
export function hostKernelMountOf(image: string, range: ByteRange): { target: string; device: string } | undefined {
  const overlapping = backingDevices(image)
    .flatMap(withPartitions)
    .filter((d) => d.offset < range.start + range.size && range.start < d.offset + d.size);
  if (!overlapping.length) return undefined;
  const mounts = hostMounts();
  for (const d of overlapping) {
    const { names, numbers } = stack(d.name);
    const mount = mounts.find((m) => {
      if (numbers.has(m.device)) return true;
      // btrfs shows an anonymous number: its source names the device.
      let source = m.source;
      try {
        source = realpathSync(m.source);
      } catch {
        // not a path
      }
      return source.startsWith('/dev/') && names.has(basename(source));
    });
    if (mount) return { target: mount.target, device: `/dev/${d.name}` };
  }
  return undefined;
}
