// Mounting an image with FUSE: the lklfuse server (native/fuse) serves the
// requests with the kernel's driver on its own threads; this side checks the
// request, takes the image's lock, finds the filesystem type, starts the
// server and waits until the mount is ready.
import { ChildProcess, execFile, spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { constants } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { host, lklfuseMountAt, locate, openImage, splitMountOptions, withCallerUmask } from '@lkl-um/core';

export interface MountOptions {
  /** The image file. */
  image: string;
  /** An existing directory to mount it on. */
  mountpoint: string;
  /** ext4, btrfs, xfs, vfat, ... or 'auto' (the default): found from the image. */
  type?: string;
  /** The partition to mount (1 is the first); 0 or none: the whole disk. */
  partition?: number;
  /** Open the image read-only and mount read-only. */
  readOnly?: boolean;
  /** Mount options for the kernel's mount of the image, as mount -o takes them (noatime,errors=remount-ro). */
  options?: string;
  /** Kernel memory in MiB (default 256). */
  memoryMb?: number;
  /** A lock file: refuse to mount when another lklfuse holds it. */
  lock?: string;
  /** A file the kernel's messages are appended to (all of them, as LKL's lklfuse logs). */
  log?: string;
  /** Show every file as owned by this uid / gid. */
  uid?: number;
  gid?: number;
  /**
   * Let other users in (needs user_allow_other in /etc/fuse.conf unless
   * root). Implies defaultPermissions: the kernel inside acts as root for
   * every caller, so the host kernel's checks are the only ones.
   */
  allowOther?: boolean;
  /** Let the host kernel check permissions from the modes shown. */
  defaultPermissions?: boolean;
  /** The host kernel caches writes and sends them in large batches. */
  writebackCache?: boolean;
  /** The largest read the host asks of the server, in bytes: at most 1 MiB, the default. */
  maxRead?: number;
  /** Further FUSE mount options, passed as they are. */
  fuseOptions?: string[];
  /** libfuse's debug output on stderr. */
  debug?: boolean;
  /** Told what is no error but may surprise (old contents shown, say); default process.emitWarning. */
  warn?: (message: string) => void;
  /** Serve one request at a time (libfuse's -s). */
  singleThread?: boolean;
  /**
   * Let the server outlive this process (a daemon): its output goes to
   * /dev/null once mounted, and it stops when the image is unmounted.
   */
  detach?: boolean;
}

/** A mounted image. */
export interface FuseMount {
  readonly mountpoint: string;
  /** The filesystem type it was mounted as. */
  readonly type: string;
  /** The server's pid. */
  readonly pid: number;
  /** The server's exit status once it has stopped: 0 clean. */
  readonly exited: Promise<number>;
  /** Unmounts (fusermount3 -u) and waits until the image is synced and closed. */
  unmount(): Promise<number>;
}

/** Another lklfuse holds the lock= file. */
export class LockHeld extends Error {
  constructor(readonly lockFile: string) {
    super(`${lockFile} is locked: another lklfuse serves this image`);
  }
}

/** The server executable, beside the kernel process. */
export function serverPath(): string {
  const server = join(dirname(locate().kernel), 'lklfuse-server');
  if (!existsSync(server)) {
    throw new Error(
      `${server} is missing: lklfuse was built without libfuse3's headers ` +
        '(install libfuse3-dev, then npm run build:native)',
    );
  }
  return server;
}

/**
 * Mounts the image once in a kernel here: it finds the type for 'auto', and
 * a mount that cannot work fails here, with the kernel's own words.
 */
async function probeType(o: MountOptions): Promise<string> {
  const image = await openImage({
    image: o.image,
    type: o.type ?? 'auto',
    partition: o.partition,
    readOnly: o.readOnly,
    options: o.options,
    memoryMb: o.memoryMb,
    warn: o.warn,
  }).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'EROFS' && !o.readOnly) e.message = `${o.image}: the image is read-only here (EROFS): mount it with -o ro`;
    throw e;
  });
  try {
    const mounts = await image.kernel.fs.readFile('/proc/self/mounts', 'utf8');
    const line = mounts.split('\n').find((l) => l.split(' ')[1] === image.root);
    if (!line) throw new Error(`${o.image}: mounted, but not found in /proc/mounts`);
    const [, , type, options] = line.split(' ');
    // Asked for read-write, it is read-write or nothing, as mount -w has it.
    if (o.readOnly === false && options.split(',').includes('ro')) {
      const e = new Error(`${o.image}: the kernel mounts ${type} only read-only (EROFS): mount it without -o rw`);
      (e as NodeJS.ErrnoException).code = 'EROFS';
      throw e;
    }
    return type;
  } finally {
    await image.close();
  }
}

/** The server's command line. */
function serverArgs(o: MountOptions, type: string, lockFd: number | undefined): string[] {
  // The real path names the mount (its fsname), where other tools look for it.
  const args = ['--image', realpathSync(o.image), '--type', type, '--ready-fd', '3'];
  if (o.partition) args.push('--partition', String(o.partition));
  if (o.readOnly) args.push('--readonly');
  const { flags, data: given } = splitMountOptions(o.options);
  const data = withCallerUmask(type, given);
  if (data) args.push('--opts', data);
  if (flags) args.push('--mount-flags', String(flags));
  if (o.memoryMb) args.push('--mb', String(o.memoryMb));
  if (lockFd !== undefined) args.push('--lock-fd', '4');
  if (o.log) args.push('--log', resolve(o.log));
  if (o.singleThread) args.push('--single-thread');
  if (o.uid !== undefined) args.push('--uid', String(o.uid));
  if (o.gid !== undefined) args.push('--gid', String(o.gid));
  if (o.writebackCache) args.push('--writeback-cache');
  if (o.maxRead) args.push('--max-read', String(o.maxRead));
  if (o.debug) args.push('--debug');
  if (o.detach) args.push('--daemon');
  const fuse = [
    ...(o.allowOther ? ['allow_other'] : []),
    ...(o.defaultPermissions || o.allowOther ? ['default_permissions'] : []),
    ...(o.fuseOptions ?? []),
  ];
  if (fuse.length) args.push('--fuse-opts', fuse.join(','));
  // As libfuse's own option parser resolves it: fusermount3 refuses a symlink.
  args.push(realpathSync(o.mountpoint));
  return args;
}

function takeLock(file: string): number {
  let fd: number;
  try {
    fd = openSync(file, 'a');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const why = err.message.replace(/^[A-Z]+: /, '').split(',')[0]; // Node's words, without the call
    throw new Error(`${file}: cannot open the lock file: ${why} (${err.code})`);
  }
  if (!host.tryLock(fd)) {
    closeSync(fd);
    throw new LockHeld(file);
  }
  return fd;
}

/** Resolves when the server says it is ready; rejects with what it said when it stops first. */
function whenReady(server: ChildProcess, exited: Promise<number>): Promise<void> {
  let said = '';
  const stderr = server.stderr!;
  const collect = (chunk: Buffer) => {
    said += chunk.toString();
  };
  stderr.on('data', collect);
  return new Promise<void>((ready, failed) => {
    server.stdio[3]!.once('data', () => {
      process.stderr.write(said); // warnings, said before it was ready
      ready();
    });
    void exited.then((status) => {
      const lines = said.trim().split('\n').filter(Boolean);
      const why = lines.map((l) => l.replace(/^lklfuse: /, '')).join('; ');
      failed(new Error(why || `the lklfuse server stopped (status ${status}) before the mount was ready`));
    });
  }).finally(() => {
    stderr.off('data', collect);
    // From now on what it says (libfuse's debug output, say) is ours to show.
    stderr.pipe(process.stderr, { end: false });
  });
}

/** Unmounts a FUSE mount point: fusermount3 -u, or umount(8) where that is missing. */
export function unmount(mountpoint: string): Promise<void> {
  const run = (cmd: string, args: string[]) =>
    new Promise<void>((done, failed) =>
      execFile(cmd, args, (err, _out, stderr) => {
        if (!err) return done();
        const e = err as NodeJS.ErrnoException;
        failed(e.code === 'ENOENT' ? e : new Error(`cannot unmount ${mountpoint}: ${stderr.trim() || e.message}`));
      }),
    );
  return run('fusermount3', ['-u', mountpoint]).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'ENOENT') throw e;
    return run('umount', [mountpoint]);
  });
}

/*
 * The real path of a mount point, found without asking its server (one
 * stopped would hang us): the directory holding it resolved, its own name
 * kept; a symlink as the last name is read, not followed into the mount.
 */
function mountPointPath(path: string): string {
  const abs = resolve(path);
  const inParent = join(realpathSync(dirname(abs)), basename(abs));
  try {
    return resolve(dirname(inParent), readlinkSync(inParent));
  } catch {
    return inParent; // not a symlink (EINVAL)
  }
}

/* The fields of /proc/PID/stat after the name: [state, ppid, ...]; undefined when it is gone. */
function statFields(pid: number | string): string[] | undefined {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ');
  } catch {
    return undefined;
  }
}

/* Whether process `pid` has exited: gone, or a zombie nobody reaped (a container's PID 1 may not). */
function exited(pid: number): boolean {
  return (statFields(pid)?.[0] ?? 'Z') === 'Z';
}

/* Whether the server still has its kernel process, alive. */
function kernelAlive(server: number): boolean {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .some((pid) => {
      const fields = statFields(pid);
      if (!fields || fields[0] === 'Z' || Number(fields[1]) !== server) return false;
      try {
        return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'lkl-um-kernel';
      } catch {
        return false;
      }
    });
}

/**
 * Unmounts an lklfuse mount made by anyone (another lklfuse command,
 * mount(8)) and waits until its server has synced the image and exited,
 * for at most `timeoutMs`: fusermount3 -u returns before that, so that the
 * image read at once may still lack what was written (guestunmount waits
 * for guestmount likewise).  Resolves 'synced' once the server has exited,
 * 'kernel-died' when its kernel had died before (what was written since is
 * lost), 'timeout', or 'unseen' when this user cannot see the server
 * (another user's, with /proc's hidepid): unmounted, but not waited for.
 */
export async function unmountAndWait(
  mountpoint: string,
  timeoutMs: number,
): Promise<'synced' | 'timeout' | 'unseen' | 'kernel-died'> {
  const target = mountPointPath(mountpoint);
  const mounted = lklfuseMountAt(target);
  if (!mounted) throw Object.assign(new Error(`${mountpoint}: not an lklfuse mount`), { code: 'EINVAL' });
  const server = mounted.server;
  // A server whose kernel died has nothing to sync: what it was given since is lost.
  const died = server !== undefined && !exited(server) && !kernelAlive(server);
  await unmount(target);
  if (server === undefined) return 'unseen';
  const deadline = Date.now() + timeoutMs;
  while (!exited(server)) {
    if (Date.now() > deadline) return 'timeout';
    await new Promise((r) => setTimeout(r, 50));
  }
  return died ? 'kernel-died' : 'synced';
}

/** Mounts an image with FUSE; resolves once the mount point shows the image. */
export async function mount(o: MountOptions): Promise<FuseMount> {
  const server = serverPath();
  if (!existsSync(o.image)) throw new Error(`${o.image}: no such file (ENOENT)`);
  let dir;
  try {
    dir = statSync(o.mountpoint);
  } catch {
    throw new Error(`${o.mountpoint}: no such directory (ENOENT)`);
  }
  if (!dir.isDirectory()) throw new Error(`${o.mountpoint}: not a directory (ENOTDIR)`);

  const lockFd = o.lock ? takeLock(o.lock) : undefined;
  try {
    const type = await probeType(o);
    const child = spawn(server, serverArgs(o, type, lockFd), {
      stdio: ['ignore', o.detach ? 'ignore' : 'inherit', 'pipe', 'pipe', lockFd ?? 'ignore'],
      detached: o.detach,
      env: { ...process.env, LKL_UM_KERNEL: locate().kernel },
    });
    const exited = new Promise<number>((done) => {
      child.once('exit', (code, signal) => done(code ?? 128 + (signal ? constants.signals[signal] : 0)));
      child.once('error', () => done(127));
    });
    // Ctrl-C while it starts: stop it rather than leave half a mount.
    const stop = () => child.kill('SIGTERM');
    process.once('SIGINT', stop);
    try {
      await whenReady(child, exited);
    } finally {
      process.off('SIGINT', stop);
    }
    if (o.detach) {
      child.stdio[3]!.destroy();
      child.stderr!.unpipe(process.stderr);
      child.stderr!.destroy();
      child.unref();
    }
    const mountpoint = realpathSync(o.mountpoint);
    return {
      mountpoint,
      type,
      pid: child.pid!,
      exited,
      async unmount() {
        await unmount(mountpoint);
        return exited;
      },
    };
  } finally {
    // The server has its own copy of the lock's fd now.
    if (lockFd !== undefined) closeSync(lockFd);
  }
}
