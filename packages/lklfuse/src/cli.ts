// lklfuse: mount a filesystem image with FUSE, as an ordinary user, with the
// kernel's own driver.  Options in the spelling of LKL's lklfuse and of
// other FUSE filesystems: lklfuse IMAGE MOUNTPOINT -o type=ext4,ro.
import { constants } from 'node:os';
import { Command } from 'commander';
import { commandOutput, EXIT_FATAL, EXIT_OK, EXIT_SOME_FAILED, integerOption, isFstabOnly, MAX_ID, MIN_MEMORY_MB, run, versionText, parseCommandLine } from '@lkl-um/core';
import { FuseMount, mount, MountOptions, unmountAndWait } from './mount';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { version } = require('../package.json') as { version: string };

function program(): Command {
  return new Command('lklfuse')
    .allowExcessArguments(false)
    .description('Mount a filesystem image with FUSE; the Linux kernel\'s own driver serves it. No root needed.')
    .usage('[options] IMAGE MOUNTPOINT')
    .argument('<image>', 'the image file')
    .argument('<mountpoint>', 'an existing directory')
    .option('-o <options>', 'mount options, comma-separated (repeatable); see below', (v: string, prev: string[]) => [...prev, v], [])
    .option('-f, --foreground', 'stay in the foreground; Ctrl-C unmounts')
    .option('-d, --debug', 'libfuse\'s debug output (implies -f)')
    .option('-s', 'serve one request at a time (as libfuse\'s -s)')
    .option('-q, --quiet', 'say nothing but errors')
    .version(versionText('lklfuse', version), '-V, --version')
    .addHelpText(
      'after',
      `
Mount options (-o):
  type=TYPE            ext4, btrfs, xfs, vfat, exfat, f2fs, ntfs3, ... or auto (default)
  part=N               the partition to mount (1 is the first)
  ro / rw              read-only (the image is opened read-only) / read-write or
                       fail; by default, a filesystem the kernel only reads
                       (iso9660, squashfs, erofs) mounts read-only
  opts=OPTIONS         the filesystem's own options; escape commas as \\,
                       (errors=remount-ro, discard, noatime ... also work
                       bare, as with mount: the image's kernel gets them)
  mb=N                 kernel memory in MiB (default 256, at least 32)
  lock=FILE            refuse (exit 2) when another lklfuse holds FILE
  log=FILE             append the kernel's messages to FILE
  uid=N, gid=N         show every file as owned by N
  allow_other          let other users in (user_allow_other in /etc/fuse.conf);
                       implies default_permissions
  default_permissions  let the host kernel check the modes shown
  writeback_cache      the host kernel batches writes (a full disk then shows
                       at close or fsync, not at each write; SEEK_DATA and
                       SEEK_HOLE find no holes)
  max_read=N           the largest read the host asks for, in bytes (4096 to
                       1048576, the default)
  nosuid, nodev, noexec, sync, dirsync, fsname=, ...
                       FUSE's options and the host mount's flags, to FUSE
                       (dev and suid: for root only)
  defaults, noauto, user, nofail, _netdev, x-*: fstab's, ignored

In the foreground, the kernel's errors about the image (a bad checksum, an
aborted journal) are shown on stderr. Two partitions of one image may be
mounted at once, each by its own lklfuse.

Unmount with lklfuse -u MOUNTPOINT: it returns once everything is synced and
the image left clean (exit 1 if that takes over --timeout SECONDS, default
120). fusermount3 -u and umount work too, but return before the image is
synced: a tool reading it at once may find it incomplete. If lklfuse is
killed, its kernel still syncs the image, and the mount point is released.

Examples:
  lklfuse disk.img /mnt/disk                       mount, in the background
  lklfuse -o ro,part=2 disk.img /mnt/root          partition 2, read-only
  lklfuse -o uid=$(id -u),gid=$(id -g) fat.img m   files shown as yours
  lklfuse -f -o type=xfs,lock=/tmp/x.lock x.img m  foreground, locked
  lklfuse -u /mnt/disk && xz disk.img              unmount; then the image is whole
  in /etc/fstab, mounted by mount(8) through mount.fuse3:
    /srv/disk.img  /mnt/disk  fuse.lklfuse  noatime,nofail,allow_other  0 0

Exit status: 0 mounted (with -f: unmounted cleanly; with -u: unmounted and
synced), 1 (-u) the server still syncing at the timeout, 2 usage or fatal error.`,
    )
    .exitOverride()
    .configureOutput(commandOutput('lklfuse'));
}

/** Splits -o text on commas, except escaped ones (\,). */
export function splitOptions(text: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '\\' && i + 1 < text.length) cur += text[++i];
    else if (text[i] === ',') {
      out.push(cur);
      cur = '';
    } else cur += text[i];
  }
  out.push(cur);
  return out.filter(Boolean);
}

function wholeNumber(name: string, value: string, max = Number.MAX_SAFE_INTEGER): number {
  if (!/^\d+$/.test(value)) throw new Error(`-o ${name}=: not a number: ${value}`);
  if (Number(value) > max) throw new Error(`-o ${name}=${value}: at most ${max}`);
  return Number(value);
}

/* The largest read the server answers: its buffers' size (MAX_IO in lklfuse-server.c). */
const MAX_READ = 1 << 20;

/* Options libfuse takes (its mount options and session options), passed to it as they are. */
const FUSE_OPTIONS = new Set([
  'allow_root', 'auto_unmount', 'fsname', 'subtype', 'user',
  'context', 'fscontext', 'defcontext', 'rootcontext', 'nonempty', 'debug',
]);
/* FUSE options that do not apply to lklfuse, and why: said, not passed on to the filesystem. */
const NOT_FOR_LKLFUSE: Record<string, string> = {
  blkdev: 'for FUSE block-device mounts (fuseblk) only',
  blksize: 'for FUSE block-device mounts (fuseblk) only',
  ...Object.fromEntries(
    ['kernel_cache', 'auto_cache', 'direct_io', 'max_write', 'max_background', 'congestion_threshold',
      'async_read', 'sync_read', 'entry_timeout', 'attr_timeout', 'negative_timeout',
      'ac_attr_timeout', 'use_ino', 'readdir_ino', 'hard_remove', 'noforget', 'remember', 'intr',
      'intr_signal', 'modules', 'clone_fd', 'max_idle_threads', 'max_threads'].map((name) => [
      name,
      "an option of libfuse's high-level API or its loop, which lklfuse does not use (it serves requests itself)",
    ]),
  ),
};
/* Flags the host's mount enforces (and a synchronous disk inside for the sync ones). */
const HOST_FLAGS = new Set(['nosuid', 'suid', 'nodev', 'dev', 'noexec', 'exec']);
const BOTH_FLAGS = new Set(['sync', 'async', 'dirsync']);

/**
 * -o options into MountOptions, as mount(8) sorts them: ours; FUSE's and
 * the flags the host's mount enforces (nosuid, noexec, ...) to FUSE; the
 * rest — atime flags, and the filesystem's own (errors=remount-ro,
 * discard, ...) — to the kernel's mount of the image.
 */
export function parseMountOptions(list: string[]): Partial<MountOptions> {
  const o: Partial<MountOptions> & { fuseOptions: string[] } = { fuseOptions: [] };
  const forKernel: string[] = [];
  for (const item of list.flatMap(splitOptions)) {
    const eq = item.indexOf('=');
    const [name, value] = eq < 0 ? [item, ''] : [item.slice(0, eq), item.slice(eq + 1)];
    switch (name) {
      case 'type':
        o.type = value;
        break;
      case 'part':
        o.partition = wholeNumber(name, value);
        break;
      case 'ro':
        o.readOnly = true;
        break;
      case 'rw':
        o.readOnly = false;
        break;
      case 'opts':
        forKernel.push(value);
        break;
      case 'mb':
        o.memoryMb = wholeNumber(name, value);
        if (o.memoryMb < MIN_MEMORY_MB) throw new Error(`-o mb=${value}: the kernel needs at least ${MIN_MEMORY_MB}`);
        break;
      case 'lock':
        if (!value) throw new Error('-o lock= needs a file');
        o.lock = value;
        break;
      case 'log':
        o.log = value;
        break;
      case 'uid':
        o.uid = wholeNumber(name, value, MAX_ID);
        break;
      case 'gid':
        o.gid = wholeNumber(name, value, MAX_ID);
        break;
      case 'allow_other':
        o.allowOther = true;
        break;
      case 'default_permissions':
        o.defaultPermissions = true;
        break;
      case 'writeback_cache':
        o.writebackCache = true;
        break;
      case 'max_read':
        o.maxRead = wholeNumber(name, value, MAX_READ);
        if (o.maxRead < 4096) throw new Error(`-o max_read=${value}: at least 4096`);
        break;
      default:
        if (isFstabOnly(item) || item === 'defaults') break;
        if (NOT_FOR_LKLFUSE[name]) throw new Error(`-o ${name}: ${NOT_FOR_LKLFUSE[name]}`);
        if (FUSE_OPTIONS.has(name) || HOST_FLAGS.has(name)) o.fuseOptions.push(item);
        else if (BOTH_FLAGS.has(name)) {
          o.fuseOptions.push(item);
          forKernel.push(item);
        } else forKernel.push(item);
    }
  }
  if (forKernel.length) o.options = forKernel.join(',');
  return o;
}

/* lklfuse -u MOUNTPOINT: as fusermount3 -u, but returns once the image is synced. */
function unmountProgram(): Command {
  return new Command('lklfuse')
    .allowExcessArguments(false)
    .usage('-u [--timeout SECONDS] MOUNTPOINT')
    .argument('<mountpoint>', 'an lklfuse mount point')
    .requiredOption('-u, --unmount', 'unmount, then wait until the image is synced and closed')
    .option('--timeout <seconds>', 'wait at most this long', integerOption('--timeout'), 120)
    .exitOverride()
    .configureOutput(commandOutput('lklfuse'));
}

async function unmountMain(argv: string[]): Promise<number> {
  const cmd = unmountProgram();
  const stop = parseCommandLine(cmd, argv);
  if (stop !== undefined) return stop;
  const [mountpoint] = cmd.args;
  const { timeout } = cmd.opts<{ timeout: number }>();
  const waited = await unmountAndWait(mountpoint, timeout * 1000);
  if (waited === 'synced') return EXIT_OK;
  const why = {
    timeout: `its server is still syncing the image after ${timeout} s`,
    unseen: 'its server is not ours to see (another user\'s?): not waited for',
    'kernel-died': 'its kernel had died before: what was written to it may not be in the image (its log= has the kernel\'s last words)',
  }[waited];
  process.stderr.write(`lklfuse: ${mountpoint}: unmounted, but ${why}\n`);
  return EXIT_SOME_FAILED;
}

async function main(argv: string[]): Promise<number> {
  if (argv.slice(2).some((a) => a === '-u' || a === '--unmount')) return unmountMain(argv);
  const cmd = program();
  const stop = parseCommandLine(cmd, argv);
  if (stop !== undefined) return stop;
  const flags = cmd.opts<{ o: string[]; foreground?: boolean; debug?: boolean; quiet?: boolean; s?: boolean }>();
  const [image, mountpoint] = cmd.args;
  const foreground = !!(flags.foreground || flags.debug);
  // In the foreground, a signal asks the server to unmount.  Listened for
  // from before the mount starts: a signal that came while no listener was
  // there (between mount()'s own and this one) was dropped by Node, and the
  // mount stayed.  One during the start is acted on once the server is
  // ready for it, and the command says it was interrupted.
  let interrupted: number | undefined; // the status to exit with, if so
  let server: number | undefined;
  const askToUnmount = () => {
    try {
      if (server !== undefined) process.kill(server, 'SIGTERM');
    } catch {
      // Gone already: mount()'s own handler stopped it.
    }
  };
  const unmountOnSignal = (signal: NodeJS.Signals) => {
    interrupted = 128 + constants.signals[signal];
    askToUnmount();
  };
  if (foreground) for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, unmountOnSignal);
  let m: FuseMount;
  try {
    m = await mount({
      ...parseMountOptions(flags.o),
      image,
      mountpoint,
      debug: flags.debug,
      singleThread: flags.s,
      detach: !foreground,
      warn: (message) => flags.quiet || process.stderr.write(`lklfuse: warning: ${message}\n`),
    });
  } catch (e) {
    if (interrupted !== undefined) return interrupted; // stopped by mount(), as asked
    throw e;
  }
  if (!foreground) return EXIT_OK;
  server = m.pid;
  if (interrupted !== undefined) {
    askToUnmount();
    await m.exited;
    return interrupted;
  }
  if (!flags.quiet) process.stderr.write(`lklfuse: ${image} (${m.type}) on ${m.mountpoint}; Ctrl-C unmounts\n`);
  const status = await m.exited;
  if (status === 0) return EXIT_OK;
  // A server that stopped by itself has said why; a killed one could not.
  const signal = Object.entries(constants.signals).find(([, n]) => n === status - 128)?.[0];
  if (signal) process.stderr.write(`lklfuse: the server was killed by ${signal}; its kernel syncs the image\n`);
  return EXIT_FATAL;
}

export function cli(): void {
  run('lklfuse', () => main(process.argv));
}
