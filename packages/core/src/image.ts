// What the disk tools share: boot a kernel for one image, plug it in,
// mount it, and take it all down cleanly at the end, or on Ctrl-C.
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, openSync, rmSync } from 'node:fs';
import type { Disk } from './disk';
import { Kernel, parseSize } from './kernel';

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

/** Makes an image file with the host's mkfs.<type>: truncate, then mkfs. */
export function createImage(image: string, size: string, type: string): void {
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
    const disk = await kernel.addDisk(o.image, { readOnly: o.readOnly });
    const root = await kernel.mount(disk, {
      type: o.type ?? 'auto',
      partition: o.partition ?? 0,
      readOnly: o.readOnly,
      options: o.options,
    });
    let closing: Promise<void> | undefined;
    return {
      kernel,
      disk,
      root,
      close: () =>
        (closing ??= (async () => {
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
        })()),
    };
  } catch (e) {
    await kernel.shutdown().catch(() => undefined);
    throw e;
  }
}
