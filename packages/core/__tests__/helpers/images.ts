// Real images made by the real tools, checked by the real tools: what the
// disk tests share.  A tool that is missing fails the test with what to
// install (CI installs everything: .ci/debian-packages).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import {
  closeSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  readSync,
  rmSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function run(cmd: string, args: string[], opts: { input?: string } = {}): string {
  const r = spawnSync(cmd, args, { input: opts.input, encoding: 'utf8' });
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT') {
    throw new Error(`${cmd} is not installed (see .ci/debian-packages: sudo apt-get install $(cat .ci/debian-packages))`);
  }
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  }
  return r.stdout;
}

/** Asserts that a command run by a test exited 0; when not, the failure shows its stderr. */
export function expectSuccess(r: { status: number | null; signal?: string | null; error?: Error; stderr: string | Buffer | null }): void {
  if (r.error) throw r.error; // not started
  if (r.status !== 0) throw new Error(`${r.signal ? `killed by ${r.signal}` : `exited ${r.status}`}, saying:\n${r.stderr}`);
}

/** The children of `pid`, with their command names, as /proc has them now. */
export function childrenOf(pid: number): { pid: number; comm: string }[] {
  const children = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    const close = stat.lastIndexOf(')');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    const ppid = Number(stat.slice(close + 2).split(' ')[1]);
    if (ppid === pid) children.push({ pid: Number(entry), comm });
  }
  return children;
}

/** Whether `pid` has a child running the lkl-um kernel. */
function hasKernelChild(pid: number): boolean {
  return childrenOf(pid).some((c) => c.comm === 'lkl-um-kernel');
}

/**
 * Runs a lkl-um command and sends it SIGINT `afterMs` after its kernel
 * process is there (so its handler is, however slow the machine is to
 * start Node), `times` times, 20 ms apart, as timeout(1) and a terminal
 * may; its exit status and stderr.
 */
export function runInterrupted(cmd: string, args: string[], afterMs: number, times = 1): Promise<{ status: number | null; stderr: string }> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const interrupt = (left: number) => {
    child.kill('SIGINT');
    if (left > 1) timer = setTimeout(() => interrupt(left - 1), 20);
  };
  const deadline = Date.now() + 60_000;
  const waitForKernel = () => {
    if (hasKernelChild(child.pid!)) timer = setTimeout(() => interrupt(times), afterMs);
    else if (Date.now() > deadline) child.kill('SIGKILL'); // status null: the test fails
    else timer = setTimeout(waitForKernel, 10);
  };
  let timer = setTimeout(waitForKernel, 0);
  return new Promise((done) =>
    child.on('exit', (status) => {
      clearTimeout(timer);
      done({ status, stderr });
    }),
  );
}

export function tempDir(prefix = 'lkl-um-test-'): string {
  return mkdtempSync(join(process.env.LKL_UM_TEST_TMP ?? tmpdir(), prefix));
}

/** How to make, check and read each filesystem from the host. */
export interface Filesystem {
  type: string;
  size: string;
  /** Makes an empty image, or (read-only filesystems) one holding `from`. */
  make(image: string, from?: string): void;
  /** Checks the image, changing nothing; throws when it is not clean. */
  fsck?(image: string): void;
  /**
   * Copies the image's files out with host means, into dir.  Without one
   * (the host kernel lacks the driver, and no tool reads it), a second,
   * fresh lkl-um kernel reads the image instead.
   */
  extract?(image: string, dir: string): void;
  readOnly?: boolean;
  symlinks: boolean;
  hardlinks: boolean;
  /** Unix owners and modes are kept. */
  owners: boolean;
}

const truncate = (image: string, size: string) => run('truncate', ['-s', size, image]);

/* The host kernel's own driver, through a read-only loop mount. */
function loopExtract(image: string, dir: string, type?: string): void {
  const mnt = tempDir('lkl-um-loop-');
  run('mount', ['-o', 'loop,ro', ...(type ? ['-t', type] : []), image, mnt]);
  try {
    run('cp', ['-a', `${mnt}/.`, dir]);
  } finally {
    run('umount', [mnt]);
    rmSync(mnt, { recursive: true });
  }
}

/* A FUSE driver: mount, copy, unmount. */
function fuseExtract(cmd: string, args: string[], image: string, dir: string): void {
  const mnt = tempDir('lkl-um-fuse-');
  run(cmd, [...args, image, mnt]);
  try {
    run('cp', ['-r', '--preserve=mode,timestamps,links', `${mnt}/.`, dir]);
  } finally {
    run('umount', [mnt]);
    rmSync(mnt, { recursive: true });
  }
}

/* Some FUSE drivers want a block device: a read-only loop device on the image. */
function withLoopDevice(image: string, fn: (dev: string) => void): void {
  const dev = run('losetup', ['-f', '--show', '-r', image]).trim();
  try {
    fn(dev);
  } finally {
    run('losetup', ['-d', dev]);
  }
}

const e2fsckClean = (image: string) => run('e2fsck', ['-fn', image]);

export const FILESYSTEMS: Filesystem[] = [
  {
    type: 'ext4', size: '64M', symlinks: true, hardlinks: true, owners: true,
    make: (i) => (truncate(i, '64M'), run('mkfs.ext4', ['-q', '-F', i])),
    fsck: e2fsckClean,
    extract: (i, d) => loopExtract(i, d),
  },
  {
    type: 'btrfs', size: '128M', symlinks: true, hardlinks: true, owners: true,
    make: (i) => (truncate(i, '128M'), run('mkfs.btrfs', ['-q', '-f', i])),
    fsck: (i) => run('btrfs', ['check', '--readonly', i]),
    extract: (i, d) => loopExtract(i, d),
  },
  {
    type: 'xfs', size: '320M', symlinks: true, hardlinks: true, owners: true,
    make: (i) => (truncate(i, '320M'), run('mkfs.xfs', ['-q', '-f', i])),
    fsck: (i) => run('xfs_repair', ['-n', i]),
    extract: (i, d) => loopExtract(i, d),
  },
  {
    type: 'vfat', size: '32M', symlinks: false, hardlinks: false, owners: false,
    make: (i) => (truncate(i, '32M'), run('mkfs.vfat', [i])),
    fsck: (i) => run('fsck.vfat', ['-n', i]),
    extract: (i, d) => run('mcopy', ['-s', '-n', '-i', i, '::/*', d]),
  },
  {
    type: 'exfat', size: '32M', symlinks: false, hardlinks: false, owners: false,
    make: (i) => (truncate(i, '32M'), run('mkfs.exfat', [i])),
    fsck: (i) => run('fsck.exfat', ['-n', i]),
    extract: (i, d) => withLoopDevice(i, (dev) => fuseExtract('mount.exfat-fuse', ['-o', 'ro'], dev, d)),
  },
  {
    type: 'f2fs', size: '128M', symlinks: true, hardlinks: true, owners: true,
    make: (i) => (truncate(i, '128M'), run('mkfs.f2fs', ['-q', '-f', i])),
    fsck: (i) => {
      const out = run('fsck.f2fs', ['--dry-run', i]);
      if (/\[Fail\]/i.test(out)) throw new Error(`fsck.f2fs:\n${out}`);
      return out;
    },
  },
  {
    type: 'ntfs3', size: '32M', symlinks: true, hardlinks: true, owners: false,
    make: (i) => (truncate(i, '32M'), run('mkntfs', ['-q', '-F', '-f', i])),
    fsck: (i) => run('ntfsfix', ['-n', i]),
    extract: (i, d) => fuseExtract('ntfs-3g', ['-o', 'ro'], i, d),
  },
  {
    type: 'udf', size: '32M', symlinks: true, hardlinks: true, owners: true,
    make: (i) => (truncate(i, '32M'), run('mkudffs', ['--utf8', '--media-type=hd', i])),
  },
  {
    type: 'iso9660', size: '', readOnly: true, symlinks: true, hardlinks: false, owners: true,
    make: (i, from) => run('xorriso', ['-as', 'mkisofs', '-quiet', '-R', '-J', '-o', i, from!]),
    extract: (i, d) => run('xorriso', ['-osirrox', 'on', '-indev', i, '-extract', '/', d]),
  },
  {
    type: 'squashfs', size: '', readOnly: true, symlinks: true, hardlinks: true, owners: true,
    make: (i, from) => run('mksquashfs', [from!, i, '-quiet', '-noappend', '-no-progress']),
    extract: (i, d) => loopExtract(i, d),
  },
  {
    type: 'erofs', size: '', readOnly: true, symlinks: true, hardlinks: true, owners: true,
    make: (i, from) => run('mkfs.erofs', [i, from!]),
    extract: (i, d) => loopExtract(i, d),
  },
];

export function filesystem(type: string): Filesystem {
  const fs = FILESYSTEMS.find((f) => f.type === type);
  if (!fs) throw new Error(`no filesystem ${type}`);
  return fs;
}

/** A file tree, as path -> content (a string: a file; {link}: a symlink; null: a directory). */
export type Tree = Record<string, string | Buffer | { link: string } | null>;

/** Reads a host directory into a Tree. */
export function readTree(dir: string, prefix = ''): Tree {
  const tree: Tree = {};
  for (const name of readdirSync(join(dir, prefix)).sort()) {
    const rel = prefix ? `${prefix}/${name}` : name;
    const path = join(dir, rel);
    const st = lstatSync(path);
    if (st.isSymbolicLink()) tree[rel] = { link: readlinkSync(path) };
    else if (st.isDirectory()) {
      tree[rel] = null;
      Object.assign(tree, readTree(dir, rel));
    } else tree[rel] = readFileSync(path);
  }
  return tree;
}

/** Writes a Tree into a host directory. */
export function writeHostTree(dir: string, tree: Tree): void {
  for (const [rel, content] of Object.entries(tree)) {
    const path = join(dir, rel);
    if (content === null) mkdirSync(path, { recursive: true });
    else if (typeof content === 'object' && !Buffer.isBuffer(content)) execFileSync('ln', ['-s', content.link, path]);
    else execFileSync('tee', [path], { input: content, stdio: ['pipe', 'ignore', 'inherit'] });
  }
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/**
 * A sparse 64 MiB ext4 image in `dir`, on a host filesystem (a tmpfs) of
 * 24 MiB: the host refuses writes to it past that.  As root.
 */
export async function withImageOnFullHost(dir: string, use: (image: string) => void | Promise<void>): Promise<void> {
  mkdirSync(dir, { recursive: true });
  run('mount', ['-t', 'tmpfs', '-o', 'size=24M', 'tmpfs', dir]);
  try {
    const image = join(dir, 'sparse.img');
    writeFileSync(image, '');
    truncateSync(image, 64 << 20);
    run('mkfs.ext4', ['-q', '-F', image]);
    await use(image);
  } finally {
    run('umount', [dir]);
  }
}

/**
 * A 64 MiB image whose directory /damaged is damaged, so that the kernel
 * finds it so when it reads it.  ext4: a block of noise, its checksum wrong;
 * `errors` is what ext4 does then: remount-ro shuts the filesystem down
 * (nothing more is written), continue goes on.  vfat: its cluster chain
 * points at cluster 1, and the kernel sets the filesystem read-only (vfat's
 * errors=remount-ro).
 */
export function imageWithDamagedDirectory(image: string, type: 'ext4' | 'vfat', errors: 'remount-ro' | 'continue' = 'remount-ro'): void {
  rmSync(image, { force: true });
  truncate(image, '64M');
  if (type === 'ext4') {
    run('mkfs.ext4', ['-q', '-F', '-b', '4096', '-e', errors, image]);
    run('debugfs', ['-w', '-R', 'mkdir damaged', image]);
    const block = Number(run('debugfs', ['-R', 'blocks damaged', image]).trim());
    run('dd', ['if=/dev/urandom', `of=${image}`, 'bs=4096', `seek=${block}`, 'count=1', 'conv=notrunc', 'status=none']);
    return;
  }
  run('mkfs.vfat', ['-F', '16', image]);
  run('mmd', ['-i', image, '::/damaged']);
  const cluster = Number(/<(\d+)>/.exec(run('mshowfat', ['-i', image, '::/damaged']))![1]);
  const fd = openSync(image, 'r+');
  try {
    const boot = Buffer.alloc(16);
    readSync(fd, boot, 0, 16, 0);
    const fatStart = boot.readUInt16LE(11) * boot.readUInt16LE(14); // bytes per sector × reserved sectors
    const entry = Buffer.alloc(2);
    entry.writeUInt16LE(1); // FAT16: the next cluster, 1, is none
    writeSync(fd, entry, 0, 2, fatStart + cluster * 2);
  } finally {
    closeSync(fd);
  }
}
