// Who on the host has an image mounted: an lklfuse mount of it, or the host
// kernel's own mount through a loop device or of the block device itself.
// Two kernels writing one filesystem lose data silently, so a writer is
// refused when either is found; the image lock covers only lkl-um kernels.
import { readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { basename } from 'node:path';

interface MountEntry {
  source: string;
  target: string;
  type: string;
}

/* /proc/self/mounts fields escape spaces, tabs, newlines and backslashes as octal. */
const unescapeField = (field: string) => field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

function hostMounts(): MountEntry[] {
  let text: string;
  try {
    text = readFileSync('/proc/self/mounts', 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [source, target, type] = line.split(' ');
      return { source: unescapeField(source), target: unescapeField(target), type };
    });
}

/* The image's real path, or undefined when it has none (gone, or no access). */
function realPath(image: string): string | undefined {
  try {
    return realpathSync(image);
  } catch {
    return undefined;
  }
}

/** Where an lklfuse mount of `image` is (lklfuse names its mount by the image's real path). */
export function lklfuseMountOf(image: string): string | undefined {
  const path = realPath(image);
  if (path === undefined) return undefined;
  return hostMounts().find((m) => m.type === 'fuse.lklfuse' && m.source === path)?.target;
}

/* The host's block devices for `path`: the loop devices backed by it, or the device itself. */
function hostDevicesOf(path: string): string[] {
  if (statSync(path, { throwIfNoEntry: false })?.isBlockDevice()) return [path];
  const devices: string[] = [];
  let names: string[];
  try {
    names = readdirSync('/sys/block').filter((n) => n.startsWith('loop'));
  } catch {
    return [];
  }
  for (const name of names) {
    try {
      const backing = readFileSync(`/sys/block/${name}/loop/backing_file`, 'utf8').trim();
      if (backing === path) devices.push(`/dev/${name}`);
    } catch {
      // not attached
    }
  }
  return devices;
}

/**
 * Where the host kernel has `image` mounted — through a loop device backed
 * by it (or one of that device's partitions), or as the block device it
 * is — with the device; undefined if it has not.
 */
export function hostKernelMountOf(image: string): { target: string; device: string } | undefined {
  const path = realPath(image);
  if (path === undefined) return undefined;
  const devices = hostDevicesOf(path);
  if (!devices.length) return undefined;
  for (const m of hostMounts()) {
    const source = realPath(m.source) ?? m.source;
    const device = devices.find((d) => source === d || partitionOf(source, d));
    if (device) return { target: m.target, device: source };
  }
  return undefined;
}

/* Whether `source` is a partition of the whole device `disk` (/dev/loop0p1 of /dev/loop0). */
function partitionOf(source: string, disk: string): boolean {
  if (!source.startsWith(disk)) return false;
  const name = basename(source);
  try {
    return readdirSync(`/sys/block/${basename(disk)}`).includes(name);
  } catch {
    return false;
  }
}
