// The disk test: for every filesystem the kernel carries, an image made by
// the real tool is plugged in, mounted ('auto' must find it), written
// (where it is writable), read back, unmounted, then checked by its own
// fsck and read by the host (its kernel through a loop mount, or a FUSE
// driver or an extracting tool where the host kernel lacks the driver).
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  constants,
  copyFileSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { CONSTANTS as C, host, Kernel, MIN_MEMORY_MB, STRUCTS } from '../src';
import {
  filesystem,
  FILESYSTEMS,
  Filesystem,
  isRoot,
  readTree,
  run,
  tempDir,
  Tree,
  writeHostTree,
} from './helpers/images';

jest.setTimeout(300_000);

let k: Kernel;
let work: string;

beforeAll(async () => {
  if (!isRoot()) throw new Error('the disk tests read images back through loop and FUSE mounts: run them as root');
  k = await Kernel.boot({ memory: '512M' });
  work = tempDir();
});

afterAll(async () => {
  await k?.shutdown();
  rmSync(work, { recursive: true, force: true });
});

const RANDOM = randomBytes(3 << 20);

function treeFor(fs: Filesystem): Tree {
  const tree: Tree = {
    dir: null,
    'dir/sub': null,
    'dir/sub/deep.txt': 'deep\n',
    'hello.txt': 'hello, world\n',
    empty: '',
    'random.bin': RANDOM,
    'unicode-ü€.txt': 'ü€',
  };
  if (fs.symlinks) tree['link-to-hello'] = { link: 'hello.txt' };
  return tree;
}

/** Writes a Tree into the kernel under dir. */
async function writeKernelTree(dir: string, tree: Tree): Promise<void> {
  for (const [rel, content] of Object.entries(tree)) {
    const path = `${dir}/${rel}`;
    if (content === null) await k.fs.mkdir(path);
    else if (typeof content === 'object' && !Buffer.isBuffer(content)) await k.fs.symlink(content.link, path);
    else await k.fs.writeFile(path, content);
  }
}

/** Reads a Tree back from the kernel, as readTree() does on the host. */
async function readKernelTree(kernel: Kernel, dir: string, prefix = ''): Promise<Tree> {
  const tree: Tree = {};
  for (const d of await kernel.fs.readdir(prefix ? `${dir}/${prefix}` : dir, { withFileTypes: true })) {
    if (!prefix && d.name === 'lost+found') continue;
    const rel = prefix ? `${prefix}/${d.name}` : d.name;
    const path = `${dir}/${rel}`;
    if (d.isSymbolicLink()) tree[rel] = { link: await kernel.fs.readlink(path) };
    else if (d.isDirectory()) {
      tree[rel] = null;
      Object.assign(tree, await readKernelTree(kernel, dir, rel));
    } else tree[rel] = await kernel.fs.readFile(path);
  }
  return tree;
}

/* Buffers and strings compare as bytes. */
function normalize(tree: Tree): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k2, v] of Object.entries(tree)) {
    if (v === null) out[k2] = 'dir';
    else if (typeof v === 'object' && !Buffer.isBuffer(v)) out[k2] = `-> ${v.link}`;
    else out[k2] = Buffer.from(v).toString('base64');
  }
  return out;
}

async function mountedType(target: string): Promise<string | undefined> {
  return (await k.mounts()).find((m) => m.target === target)?.type;
}

describe.each(FILESYSTEMS.filter((f) => !f.readOnly).map((f) => [f.type, f] as const))('%s', (type, fs) => {
  test('made by its tool, mounted, written, read back; fsck clean; the host reads the same', async () => {
    const image = join(work, `${type}.img`);
    fs.make(image);
    const tree = treeFor(fs);

    const disk = await k.addDisk(image);
    expect(disk.size).toBe(statSync(image).size);
    const target = await k.mount(disk);
    expect(await mountedType(target)).toBe(type);
    await writeKernelTree(target, tree);
    expect(normalize(await readKernelTree(k, target))).toEqual(normalize(tree));
    await k.umount(target);
    await disk.remove();

    fs.fsck?.(image);
    if (!fs.extract) {
      // No host reader: a fresh kernel, which caches nothing, reads it.
      const fresh = await Kernel.boot({ memory: '256M' });
      const d = await fresh.addDisk(image, { readOnly: true });
      const m = await fresh.mount(d);
      expect(normalize(await readKernelTree(fresh, m))).toEqual(normalize(tree));
      await fresh.shutdown();
    } else {
      const host = tempDir('lkl-um-host-');
      fs.extract(image, host);
      const seen = readTree(host);
      delete seen['lost+found'];
      expect(normalize(seen)).toEqual(normalize(tree));
      rmSync(host, { recursive: true });
    }
    rmSync(image);
  });
});

describe.each(FILESYSTEMS.filter((f) => f.readOnly).map((f) => [f.type, f] as const))('%s', (type, fs) => {
  test('made by its tool from a tree, mounted read-only, read back, refuses writes', async () => {
    const source = tempDir('lkl-um-src-');
    const tree = treeFor(fs);
    writeHostTree(source, tree);
    const image = join(work, `${type}.img`);
    fs.make(image, source);

    const disk = await k.addDisk(image, { readOnly: true });
    const target = await k.mount(disk);
    expect(await mountedType(target)).toBe(type);
    expect(normalize(await readKernelTree(k, target))).toEqual(normalize(readTree(source)));
    await expect(k.fs.writeFile(`${target}/new`, 'x')).rejects.toMatchObject({ code: 'EROFS' });
    await k.umount(target);
    await disk.remove();

    const host = tempDir('lkl-um-host-');
    fs.extract!(image, host);
    expect(normalize(readTree(host))).toEqual(normalize(readTree(source)));
    rmSync(host, { recursive: true });
    rmSync(source, { recursive: true });
    rmSync(image);
  });
});

describe('partitioned images', () => {
  test.each(['gpt', 'dos'])('%s with two partitions: partition 2 mounts', async (label) => {
    const image = join(work, `parted-${label}.img`);
    writeFileSync(image, '');
    truncateSync(image, 80 << 20);
    run('sfdisk', ['-q', image], { input: `label: ${label}\nsize=16MiB\nsize=48MiB\n` });
    const layout = JSON.parse(run('sfdisk', ['-J', image])).partitiontable.partitions as { start: number; size: number }[];
    const part = join(work, `part-${label}.img`);
    writeFileSync(part, '');
    truncateSync(part, layout[1].size * 512);
    run('mkfs.ext4', ['-q', '-F', part]);
    run('dd', [`if=${part}`, `of=${image}`, 'bs=512', `seek=${layout[1].start}`, 'conv=notrunc', 'status=none']);

    const disk = await k.addDisk(image);
    expect(disk.partitions.map((p) => [p.number, p.start, p.size])).toEqual(
      layout.map((p, i) => [i + 1, p.start * 512, p.size * 512]),
    );
    const target = await k.mount(disk, { partition: 2 });
    expect(target).toBe(`/mnt/${disk.name}2`);
    await k.fs.writeFile(`${target}/on-partition-2`, 'two');
    await k.umount(target);
    await expect(k.mount(disk, { partition: 3 })).rejects.toThrow(/no partition 3/);
    await disk.remove();

    run('dd', [`if=${image}`, `of=${part}`, 'bs=512', `skip=${layout[1].start}`, `count=${layout[1].size}`, 'status=none']);
    run('e2fsck', ['-fn', part]);
    expect(run('debugfs', ['-R', 'cat /on-partition-2', part])).toBe('two');
  });
});

describe('O_DIRECT at the end of a file', () => {
  // btrfs faults the rest of the buffer in and tries again after a short
  // direct read; the kernel's tasks have no mm, and that was a panic.
  test.each(['ext4', 'btrfs', 'xfs', 'f2fs'])('%s: a read past the end returns what is there', async (type) => {
    const image = join(work, `odirect-end-${type}.img`);
    filesystem(type).make(image);
    const disk = await k.addDisk(image);
    const target = await k.mount(disk);
    const data = RANDOM.subarray(0, (1 << 20) + 123);
    await k.fs.writeFile(`${target}/f`, data);
    // Read from the disk, not from the page cache.
    await k.umount(target);
    await k.mount(disk);
    await withDirectFile(`${target}/f`, C.O_RDONLY, 1 << 20, async (fd, buffer) => {
      expect(await k.sys.pread64(fd, buffer.address, 1 << 20, 0)).toBe(1 << 20);
      expect(buffer.bytes.equals(data.subarray(0, 1 << 20))).toBe(true);
      expect(await k.sys.pread64(fd, buffer.address, 1 << 20, 1 << 20)).toBe(123);
      expect(buffer.bytes.subarray(0, 123).equals(data.subarray(1 << 20))).toBe(true);
    });
    await k.umount(target);
    await disk.remove();
    filesystem(type).fsck!(image);
    rmSync(image);
  });
});

describe('paths longer than the kernel takes (PATH_MAX)', () => {
  test('are reached a piece at a time: every call works on them, errors name them; fsck clean; the host finds them', async () => {
    const image = join(work, 'deep.img');
    filesystem('ext4').make(image);
    const disk = await k.addDisk(image);
    const target = await k.mount(disk);
    const top = `${target}/${'d'.repeat(200)}0`;
    let dir = top;
    for (let i = 1; i < 30; i++) dir += `/${'d'.repeat(200)}${i}`;
    expect(Buffer.byteLength(dir)).toBeGreaterThan(6000);

    expect(await k.fs.mkdir(dir, { recursive: true })).toBe(top);
    await k.fs.writeFile(`${dir}/file`, 'deep\n');
    expect(await k.fs.readFile(`${dir}/file`, 'utf8')).toBe('deep\n');
    expect((await k.fs.stat(`${dir}/file`)).size).toBe(5);
    expect(await k.fs.readdir(dir)).toEqual(['file']);
    await k.fs.chmod(`${dir}/file`, 0o640);
    await k.fs.setxattr(`${dir}/file`, 'user.deep', 'yes');
    expect((await k.fs.getxattr(`${dir}/file`, 'user.deep')).toString()).toBe('yes');
    await k.fs.symlink('file', `${dir}/link`);
    expect(await k.fs.readlink(`${dir}/link`)).toBe('file');
    await k.fs.rename(`${dir}/file`, `${dir}/moved`);
    await k.fs.link(`${dir}/moved`, `${target}/hard`);
    expect(await k.fs.readFile(`${target}/hard`, 'utf8')).toBe('deep\n');

    // A symlink's target is no path to look up: too long, it stays too long.
    await expect(k.fs.symlink('t'.repeat(5000), `${dir}/long-link`)).rejects.toMatchObject({ code: 'ENAMETOOLONG', syscall: 'symlink' });
    await expect(k.fs.stat(`${dir}/missing`)).rejects.toMatchObject({ code: 'ENOENT', syscall: 'stat', path: `${dir}/missing` });
    await expect(k.fs.open(`${target}/hard/${dir}`)).rejects.toMatchObject({ code: 'ENOTDIR', syscall: 'open' });
    await k.umount(target);
    await disk.remove();
    run('e2fsck', ['-fn', image]);

    const mnt = tempDir('lkl-um-loop-');
    run('mount', ['-o', 'loop,ro', image, mnt]);
    try {
      // find walks by directory fds, so it goes as deep as the tree does.
      const found = run('find', [mnt, '-name', 'moved', '-printf', '%s %m %d\n']);
      expect(found).toBe('5 640 31\n');
    } finally {
      run('umount', [mnt]);
      rmSync(mnt, { recursive: true });
    }
    rmSync(image);
  });
});

describe('a loop device and its file', () => {
  test('are locked as one image: a kernel writing either keeps others off both', async () => {
    const image = join(work, 'looped.img');
    FILESYSTEMS[0].make(image);
    const loop = run('losetup', ['-f', '--show', image]).trim();
    const other = await Kernel.boot({ memory: '64M' });
    try {
      const onLoop = await k.addDisk(loop);
      await expect(other.addDisk(image, { lockTimeoutMs: 200 })).rejects.toThrow(`${image}: in use by another lkl-um kernel`);
      await onLoop.remove();
      const onFile = await other.addDisk(image);
      await expect(k.addDisk(loop, { lockTimeoutMs: 200 })).rejects.toThrow(`${loop} (a loop device of ${image}): in use`);
      await onFile.remove();
      // Readers share them.
      const reading = await Promise.all([k.addDisk(loop, { readOnly: true }), other.addDisk(image, { readOnly: true })]);
      for (const disk of reading) await disk.remove();
      // A kernel shut down with the disk still in lets go of the file too.
      const third = await Kernel.boot({ memory: '64M' });
      await third.addDisk(loop);
      await third.shutdown();
      await (await other.addDisk(image, { lockTimeoutMs: 200 })).remove();
    } finally {
      await other.shutdown();
      run('losetup', ['-d', loop]);
    }
  });
});

function hostDoesDirectIo(dir: string): boolean {
  const probe = join(dir, 'direct-io-probe');
  try {
    closeSync(openSync(probe, constants.O_WRONLY | constants.O_CREAT | constants.O_DIRECT));
    return true;
  } catch {
    return false;
  } finally {
    rmSync(probe, { force: true });
  }
}

/* Opens `path` in the kernel with O_DIRECT and `flags`, with a buffer of `size` in the window for `use`. */
async function withDirectFile(
  path: string,
  flags: number,
  size: number,
  use: (fd: number, buffer: ReturnType<Kernel['alloc']>) => Promise<void>,
): Promise<void> {
  const name = k.alloc(256);
  const buffer = k.alloc(size); // the heap aligns a block to its size
  try {
    const fd = await k.sys.openat(C.AT_FDCWD, name.cstring(path), flags | C.O_DIRECT, 0o644);
    try {
      await use(fd, buffer);
    } finally {
      await k.sys.close(fd);
    }
  } finally {
    name.free();
    buffer.free();
  }
}

/* An overlayfs mount over directories in `base`, as a container's root is; its path. */
function overlayDir(base: string): string {
  for (const d of ['lower', 'upper', 'work', 'merged']) mkdirSync(join(base, d), { recursive: true });
  run('mount', ['-t', 'overlay', 'overlay', '-o',
    `lowerdir=${base}/lower,upperdir=${base}/upper,workdir=${base}/work`, join(base, 'merged')]);
  return join(base, 'merged');
}

/* How much of @file the host has in its page cache, in bytes. */
function cachedBytes(file: string): number {
  return Number(run('fincore', ['--bytes', '--noheadings', '--output', 'RES', file]).trim());
}

describe('the least memory', () => {
  // The kernel's binary and the host's heap after it used to come out of
  // mem=: 32M left 12 to 16 MiB, a different amount in each run, and
  // making these files hung the journal's commit in half the runs.
  test('is all the kernel\'s, the same in every run, and enough for 20 000 files on ext4; fsck clean', async () => {
    const memTotal = async (kernel: Kernel) =>
      Number(/^MemTotal:\s+(\d+) kB/m.exec(await kernel.fs.readFile('/proc/meminfo', 'utf8'))![1]);
    const image = join(work, 'least-memory.img');
    writeFileSync(image, '');
    truncateSync(image, 256 << 20);
    run('mkfs.ext4', ['-q', '-F', image]);
    const sizes: number[] = [];
    for (let boot = 0; boot < 2; boot++) {
      const small = await Kernel.boot({ memory: `${MIN_MEMORY_MB}M` });
      sizes.push(await memTotal(small));
      if (boot === 1) {
        const target = await small.mount(await small.addDisk(image));
        for (let d = 0; d < 40; d++) {
          await small.fs.mkdir(`${target}/d${d}`);
          for (let f = 0; f < 500; f++) await small.fs.writeFile(`${target}/d${d}/f${f}`, '');
        }
        expect(await small.fs.readdir(`${target}/d39`)).toHaveLength(500);
      }
      await small.shutdown();
    }
    expect(sizes[0]).toBeGreaterThanOrEqual(MIN_MEMORY_MB * 1024);
    expect(sizes[1]).toBe(sizes[0]);
    run('e2fsck', ['-fn', image]);
    rmSync(image);
  });
});

describe('big files and sparse images', () => {
  test('a 1 GiB file goes in and comes back whole through a 32 MiB window', async () => {
    const image = join(work, 'gig.img');
    writeFileSync(image, '');
    truncateSync(image, 1600 << 20);
    run('mkfs.ext4', ['-q', '-F', image]);
    const small = await Kernel.boot({ memory: '256M', heapSize: 32 << 20 });
    const disk = await small.addDisk(image);
    const target = await small.mount(disk);
    const data = Buffer.allocUnsafe(1 << 30);
    for (let at = 0; at < data.length; at += RANDOM.length) RANDOM.copy(data, at);
    await small.fs.writeFile(`${target}/gig`, data);
    const back = await small.fs.readFile(`${target}/gig`);
    expect(back.length).toBe(data.length);
    expect(back.equals(data)).toBe(true);
    await small.shutdown();
    rmSync(image);
  });

  test('large writes go around the host\'s cache, which keeps no stale copy of what they overwrite', async () => {
    const image = join(work, 'direct.img');
    writeFileSync(image, '');
    truncateSync(image, 64 << 20);
    run('mkfs.ext4', ['-q', '-F', '-b', '4096', image]); // blocks on whole pages of the image
    const data = Buffer.concat(Array.from({ length: 6 }, () => RANDOM)).subarray(0, 16 << 20);
    const cached = () => cachedBytes(image);
    readFileSync(image); // now the host has all of the image in its cache
    const before = cached();
    const disk = await k.addDisk(image);
    const target = await k.mount(disk);
    await k.fs.writeFile(`${target}/big`, data);
    await k.umount(target);
    await disk.remove();

    // Written straight to the disk: the host dropped its copy of those pages
    // (where the host's filesystem does O_DIRECT; tmpfs before Linux 6.6 does not).
    if (hostDoesDirectIo(work)) expect(before - cached()).toBeGreaterThanOrEqual(12 << 20);
    else expect(before - cached()).toBe(0);
    // And what the host reads through its cache is what was written.
    run('e2fsck', ['-fn', image]);
    const back = join(work, 'direct.back');
    run('debugfs', ['-R', `dump /big ${back}`, image]);
    expect(readFileSync(back).equals(data)).toBe(true);
  });

  test.each([
    ['writable', false, false],
    ['read-only', true, false],
    ['writable, through overlayfs', false, true],
  ])('large reads of what the host has not cached go around its cache, and see what it holds unwritten (%s)', async (_, readOnly, overlay) => {
    const dir = overlay ? overlayDir(join(work, 'overlay')) : work;
    try {
      const image = join(dir, 'uncached.img');
      const data = Buffer.concat(Array.from({ length: 6 }, () => RANDOM)).subarray(0, 16 << 20);
      writeFileSync(image, data);
      // Out of the host's cache: written back, then dropped (not on tmpfs,
      // whose files live in the cache).
      run('dd', ['if=/dev/null', `of=${image}`, 'oflag=nocache', 'conv=notrunc,fdatasync', 'count=0', 'status=none']);
      const dropped = cachedBytes(image) < 1 << 20;
      // A page the host has in its cache, not yet written back.
      const fresh = randomBytes(4096);
      const fd = openSync(image, 'r+');
      writeSync(fd, fresh, 0, fresh.length, 5 << 20);
      const aroundCache = host.cacheKnown(fd) && hostDoesDirectIo(dir);
      closeSync(fd);
      const want = Buffer.from(data);
      fresh.copy(want, 5 << 20);

      const disk = await k.addDisk(image, { readOnly });
      // A small read first, through the host's cache: had the host read
      // ahead of it, the kernel's next read would find its cache full,
      // go through it in turn, and so on to the end.
      const start = await k.fs.open(disk.path, 'r');
      await start.read(Buffer.alloc(32 << 10), 0, 32 << 10, 0);
      await start.close();
      const back = await k.fs.readFile(disk.path);
      await disk.remove();
      expect(back.equals(want)).toBe(true);
      // The kernel read it all, ahead of itself in large requests; the host
      // cached none of it but the page it had, where mincore(2) tells the
      // disk what the host has cached (through overlayfs too: the cache of
      // the file below). Elsewhere it is all read through the host's cache.
      if (dropped) {
        if (aroundCache) expect(cachedBytes(image)).toBeLessThan(2 << 20);
        else expect(cachedBytes(image)).toBeGreaterThanOrEqual(15 << 20);
      }
      if (overlay) expect(aroundCache).toBe(hostDoesDirectIo(work)); // known through overlayfs too
      rmSync(image);
    } finally {
      if (overlay) run('umount', [dir]);
    }
  });

  test('O_DIRECT reads and writes between the window and the disk', async () => {
    const image = join(work, 'odirect.img');
    FILESYSTEMS[0].make(image);
    const disk = await k.addDisk(image);
    const target = await k.mount(disk);
    const size = 4 << 20;
    const data = Buffer.concat([RANDOM, RANDOM]).subarray(0, size);
    await withDirectFile(`${target}/direct`, C.O_RDWR | C.O_CREAT, size, async (fd, buffer) => {
      data.copy(buffer.bytes);
      expect(await k.sys.pwrite64(fd, buffer.address, size, 0)).toBe(size);
      buffer.bytes.fill(0);
      expect(await k.sys.pread64(fd, buffer.address, size, 0)).toBe(size);
      expect(buffer.bytes.equals(data)).toBe(true);
      // Direct I/O keeps its alignment rules: an odd offset is refused.
      await expect(k.sys.pread64(fd, buffer.address, 4096, 1)).rejects.toMatchObject({ code: 'EINVAL' });
    });
    await k.umount(target);
    await disk.remove();
    run('e2fsck', ['-fn', image]);
    const back = join(work, 'odirect.back');
    run('debugfs', ['-R', `dump /direct ${back}`, image]);
    expect(readFileSync(back).equals(data)).toBe(true);
  });

  test('discard punches holes: what fstrim frees leaves the image', async () => {
    const image = join(work, 'sparse.img');
    FILESYSTEMS[0].make(image);
    const fresh = statSync(image).blocks;
    const disk = await k.addDisk(image);
    const target = await k.mount(disk);
    await k.fs.writeFile(`${target}/filler`, Buffer.alloc(32 << 20, 1));
    await k.sys.sync();
    expect(statSync(image).blocks - fresh).toBeGreaterThanOrEqual((32 << 20) / 512);
    await k.fs.unlink(`${target}/filler`);
    await k.sys.sync(); // blocks freed by a running transaction are not trimmed
    const dir = await k.fs.open(target, 'r');
    const range = k.alloc(STRUCTS.fstrim_range.size);
    range.bytes.fill(0);
    range.bytes.writeBigUInt64LE(0xffffffffffffffffn, STRUCTS.fstrim_range.fields.len[0]);
    await k.sys.ioctl(dir.fd, C.FITRIM, range.address);
    expect(range.bytes.readBigUInt64LE(STRUCTS.fstrim_range.fields.len[0])).toBeGreaterThan(0n);
    range.free();
    await dir.close();
    await k.umount(target);
    await disk.remove();
    expect(statSync(image).blocks).toBeLessThanOrEqual(fresh + 64);
    run('e2fsck', ['-fn', image]);
  });
});

describe('one image, several kernels', () => {
  test('a kernel that writes an image has it alone; readers share it; the next one gets it once it is down', async () => {
    const image = join(work, 'shared.img');
    FILESYSTEMS[0].make(image);
    const writer = await Kernel.boot();
    const other = await Kernel.boot();
    try {
      const disk = await writer.addDisk(image);
      const t0 = Date.now();
      await expect(other.addDisk(image, { lockTimeoutMs: 300 })).rejects.toThrow(
        /shared\.img: in use by another lkl-um kernel/,
      );
      expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
      await expect(other.addDisk(image, { readOnly: true, lockTimeoutMs: 100 })).rejects.toMatchObject({ code: 'EBUSY' });
      const target = await writer.mount(disk);
      await writer.fs.writeFile(`${target}/written`, 'by the writer');
      await writer.umount(target);
      await disk.remove();

      // Unplugged, the image is free again: two readers at once.
      const r1 = await other.addDisk(image, { readOnly: true, lockTimeoutMs: 100 });
      const r2 = await writer.addDisk(image, { readOnly: true, lockTimeoutMs: 100 });
      const at = await other.mount(r1, { readOnly: true });
      expect(await other.fs.readFile(`${at}/written`, 'utf8')).toBe('by the writer');
      await other.umount(at);
      await r1.remove();
      await r2.remove();
    } finally {
      await writer.shutdown();
      await other.shutdown();
    }
  });

  test('an image the host has mounted is not mounted to write: given as an fd, or mounted by fuse2fs', async () => {
    const image = join(work, 'host-has-it.img');
    FILESYSTEMS[0].make(image);
    const k2 = await Kernel.boot();
    const mnt = tempDir('lkl-um-host-mnt-');
    try {
      for (const [how, hostMount, said] of [
        ['a loop device', ['mount', ['-o', 'loop', image, mnt]], `mounted by the host on ${mnt} \\(`],
        ['fuse2fs', ['fuse2fs', [image, mnt, '-o', 'rw']], `mounted by the host on ${mnt} \\(`],
        // By a relative path, as fuse2fs keeps it: its server has the file open.
        ['fuse2fs, relative', ['fuse2fs', ['host-has-it.img', mnt, '-o', 'rw']], 'served by fuse2fs \\(pid \\d+\\), a FUSE filesystem with it open for writing'],
      ] as const) {
        execFileSync(hostMount[0], [...hostMount[1]], { cwd: work });
        try {
          const fd = openSync(image, 'r+');
          const disk = await k2.addDisk(fd);
          closeSync(fd);
          await expect(k2.mount(disk)).rejects.toThrow(new RegExp(`fd \\d+: ${said}`));
          // To read is left alone.
          await k2.umount(await k2.mount(disk, { readOnly: true }));
          await disk.remove();
        } catch (e) {
          throw new Error(`${how}: ${(e as Error).message}`);
        } finally {
          run('umount', [mnt]);
        }
      }
    } finally {
      await k2.shutdown();
      rmSync(mnt, { recursive: true, force: true });
    }
  });

  test('one kernel may read an image twice (readers share), not write it twice', async () => {
    const image = join(work, 'twice.img');
    FILESYSTEMS[0].make(image);
    const one = await k.addDisk(image, { readOnly: true });
    const two = await k.addDisk(image, { readOnly: true });
    expect(two.name).not.toBe(one.name);
    await expect(k.addDisk(image, { lockTimeoutMs: 100 })).rejects.toThrow(/already added to this kernel, as vd[a-z]+ \(EBUSY\)/);
    await one.remove();
    await two.remove();
  });

  test('a disk added for one partition locks that partition alone', async () => {
    const image = join(work, 'parts.img');
    writeFileSync(image, '');
    truncateSync(image, 64 << 20);
    execFileSync('sfdisk', ['-q', image], { input: 'label: gpt\n,24M\n,\n' });
    const a = await Kernel.boot();
    const b = await Kernel.boot();
    try {
      const one = await a.addDisk(image, { partition: 1 });
      const two = await b.addDisk(image, { partition: 2, lockTimeoutMs: 100 });
      // Twice in one kernel: said at once, not blamed on another kernel after a wait.
      const started = Date.now();
      await expect(a.addDisk(image, { partition: 1 })).rejects.toThrow(/parts\.img: already added to this kernel, as vd[a-z]+ for partition 1 \(EBUSY\)/);
      await expect(a.addDisk(image)).rejects.toThrow(/already added to this kernel/);
      expect(Date.now() - started).toBeLessThan(10_000); // the lock's wait is 15 s
      await expect(b.addDisk(image, { partition: 1, lockTimeoutMs: 100 })).rejects.toThrow(/parts\.img partition 1: in use by another lkl-um kernel/);
      await expect(b.addDisk(image, { lockTimeoutMs: 100 })).rejects.toMatchObject({ code: 'EBUSY' }); // the whole disk
      await expect(b.mount(two, { partition: 1 })).rejects.toThrow(/added for partition 2 alone/);
      await expect(b.addDisk(image, { partition: 3 })).rejects.toThrow(/no partition 3 \(ENODEV; its partitions: 1, 2\)/);
      await one.remove();
      await two.remove();
      // Both free again: the whole disk.
      await (await b.addDisk(image, { lockTimeoutMs: 100 })).remove();
    } finally {
      await a.shutdown();
      await b.shutdown();
    }
  });
});

describe('durability', () => {
  test('data written and fsynced inside survives kill -9 of the kernel process', async () => {
    const image = join(work, 'durable.img');
    FILESYSTEMS[0].make(image);
    const victim = await Kernel.boot();
    const disk = await victim.addDisk(image);
    const target = await victim.mount(disk);
    const data = randomBytes(5 << 20);
    const fh = await victim.fs.open(`${target}/synced`, 'w');
    await fh.write(data);
    await fh.sync();
    process.kill(victim.pid, 'SIGKILL');
    await expect(victim.shutdown()).rejects.toThrow();

    // The host view, after journal recovery on a copy.
    const copy = join(work, 'durable-copy.img');
    copyFileSync(image, copy);
    spawnFsckFix(copy);
    const out = join(work, 'synced.out');
    run('debugfs', ['-R', `dump /synced ${out}`, copy]);
    expect(readFileSync(out).equals(data)).toBe(true);
  });

  test('when Node is killed mid-write, the kernel unmounts by itself: fsck clean without recovery', async () => {
    const image = join(work, 'orphan.img');
    FILESYSTEMS[0].make(image);
    const script = `
      const { Kernel } = require(${JSON.stringify(join(__dirname, '../dist'))});
      (async () => {
        const k = await Kernel.boot();
        const m = await k.mount(await k.addDisk(${JSON.stringify(image)}));
        console.log(k.pid);
        const chunk = Buffer.alloc(1 << 20, 7);
        for (let i = 0; ; i++) await k.fs.writeFile(m + '/f' + (i % 20), chunk);
      })();`;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const pid = await new Promise<number>((resolve) => child.stdout.once('data', (d) => resolve(Number(d))));
    await new Promise((r) => setTimeout(r, 300));
    child.kill('SIGKILL');
    const until = Date.now() + 60_000;
    while (Date.now() < until && alive(pid)) await new Promise((r) => setTimeout(r, 20));
    expect(alive(pid)).toBe(false);
    run('e2fsck', ['-fn', image]); // exit 0: clean, no journal to replay
    expect(run('dumpe2fs', ['-h', image])).toMatch(/Filesystem state:\s+clean/);
    expect(run('dumpe2fs', ['-h', image])).not.toMatch(/needs_recovery/);
  });
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !/State:\s+Z/.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/* e2fsck -fy exits 1 when it fixed something, which a journal replay is. */
function spawnFsckFix(image: string): void {
  try {
    run('e2fsck', ['-fy', image]);
  } catch (e) {
    if (!/failed \(1\)/.test((e as Error).message)) throw e;
  }
}

describe('bad input', () => {
  test('a missing image, a directory', async () => {
    await expect(k.addDisk(join(work, 'missing.img'))).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(k.addDisk(work)).rejects.toMatchObject({ code: 'EISDIR' });
  });

  test('an empty file: said so, not a list of every filesystem tried', async () => {
    const image = join(work, 'empty.img');
    writeFileSync(image, '');
    const disk = await k.addDisk(image);
    expect(disk.size).toBe(0);
    await expect(k.mount(disk)).rejects.toThrow(`${image}: empty (0 bytes): no filesystem in it`);
    await disk.remove();
  });

  test('a compressed image or a tar archive: said what it is, and what to do', async () => {
    const image = join(work, 'packed.img');
    FILESYSTEMS[0].make(image);
    const gz = join(work, 'packed.img.gz');
    writeFileSync(gz, execFileSync('gzip', ['-c', image], { maxBuffer: 1 << 30 }));
    const tar = join(work, 'packed.tar');
    execFileSync('tar', ['-cf', tar, '-C', work, 'packed.img']);
    for (const [file, said] of [[gz, 'gzip-compressed, not a filesystem image: gunzip it first'], [tar, 'a tar archive, not a filesystem image']]) {
      const disk = await k.addDisk(file, { readOnly: true });
      await expect(k.mount(disk)).rejects.toThrow(`${file}: ${said}`);
      await disk.remove();
    }
  });

  test('a truncated image and a corrupt superblock give the kernel\'s own words', async () => {
    const image = join(work, 'truncated.img');
    FILESYSTEMS[0].make(image);
    truncateSync(image, 4 << 20);
    let disk = await k.addDisk(image);
    await expect(k.mount(disk)).rejects.toThrow(/EXT4-fs/);
    await disk.remove();

    const corrupt = join(work, 'corrupt.img');
    FILESYSTEMS[0].make(corrupt);
    const bytes = readFileSync(corrupt);
    bytes.fill(0xff, 1024, 1024 + 256); // the primary superblock
    writeFileSync(corrupt, bytes);
    disk = await k.addDisk(corrupt);
    await expect(k.mount(disk)).rejects.toThrow(/no filesystem the kernel knows/);
    await expect(k.mount(disk, { type: 'ext4' })).rejects.toThrow(/the kernel said: .*EXT4-fs/);
    await disk.remove();
  });

  test('a wrong type', async () => {
    const image = join(work, 'wrongtype.img');
    FILESYSTEMS[0].make(image);
    const disk = await k.addDisk(image);
    const e = await k.mount(disk, { type: 'xfs', target: '/mnt/wrong' }).catch((err) => err);
    expect(e.message).toMatch(/wrongtype\.img: cannot mount as xfs: EINVAL.*the kernel said: .*XFS/);
    // For code: the paths, as node:fs gives them, not words.
    expect(e).toMatchObject({ code: 'EINVAL', syscall: 'mount', path: image, dest: '/mnt/wrong' });
    await expect(k.mount(disk, { partition: 2 })).rejects.toMatchObject({ code: 'ENODEV', path: image });
    await disk.remove();
  });

  test('mount(8)\'s flags in options become the mount\'s flags; the rest goes to the filesystem', async () => {
    const image = join(work, 'flags.img');
    FILESYSTEMS[0].make(image);
    const disk = await k.addDisk(image);
    const target = await k.mount(disk, { options: 'sync,noatime,nodev,errors=remount-ro,lazytime,nosymfollow,nofail,x-fstab,async' });
    const line = (await k.mounts()).find((m) => m.target === target)!;
    expect(line.options).not.toMatch(/\bsync\b/); // the later async wins, as with mount(8)
    expect(line.options).toMatch(/\bnosymfollow\b/);
    expect(line.options).toMatch(/\bnoatime\b/);
    expect(line.options).toMatch(/\bnodev\b/);
    expect(line.options).toMatch(/\blazytime\b/);
    expect(line.options).toMatch(/errors=remount-ro/);
    await k.umount(target);
    await disk.remove();
  });

  test('a stale signature does not hide the filesystem there; a found one\'s failure is the one told', async () => {
    const image = join(work, 'stale.img');
    writeFileSync(image, '');
    truncateSync(image, 64 << 20);
    run('mkfs.vfat', ['-F', '32', image]);
    const bytes = readFileSync(image);
    bytes.writeUInt16LE(0xef53, 0x438); // an ext4 magic, in FAT32's reserved sectors
    writeFileSync(image, bytes);
    let disk = await k.addDisk(image);
    const target = await k.mount(disk);
    expect((await k.mounts()).find((m) => m.target === target)!.type).toBe('vfat');
    await k.umount(target);
    await disk.remove();

    const ext4 = join(work, 'bad-option.img');
    FILESYSTEMS[0].make(ext4);
    disk = await k.addDisk(ext4);
    await expect(k.mount(disk, { options: 'no_such_option' })).rejects.toThrow(
      /\/bad-option\.img: cannot mount as ext4 \(its signature\): EINVAL \(invalid argument\); the kernel said: .*no_such_option/,
    );
    await disk.remove();
  });

  test('a full filesystem: ENOSPC, and nothing written earlier is lost', async () => {
    const image = join(work, 'full.img');
    writeFileSync(image, '');
    truncateSync(image, 8 << 20);
    run('mkfs.ext4', ['-q', '-F', image]);
    const disk = await k.addDisk(image);
    const target = await k.mount(disk);
    await k.fs.writeFile(`${target}/keep`, 'precious');
    await expect(k.fs.writeFile(`${target}/huge`, Buffer.alloc(16 << 20, 1))).rejects.toMatchObject({
      code: 'ENOSPC',
    });
    expect(await k.fs.readFile(`${target}/keep`, 'utf8')).toBe('precious');
    await k.umount(target);
    await disk.remove();
    run('e2fsck', ['-fn', image]);
    expect(run('debugfs', ['-R', 'cat /keep', image])).toBe('precious');
  });

  test('a read-only image file: mounts read-only when asked, a clear error otherwise', async () => {
    const image = join(work, 'readonly.img');
    FILESYSTEMS[0].make(image);
    chmodSync(image, 0o444);
    run('chattr', ['+i', image]); // even root cannot write it now
    try {
      // In words a command can show too: no library option named.
      await expect(k.addDisk(image)).rejects.toMatchObject({
        code: 'EROFS',
        path: image,
        message: `${image}: no permission to write it here (EROFS): it can only be read`,
      });
      const disk = await k.addDisk(image, { readOnly: true });
      const target = await k.mount(disk);
      expect((await k.mounts()).find((m) => m.target === target)?.options).toMatch(/^ro\b/);
      await expect(k.fs.writeFile(`${target}/x`, 'x')).rejects.toMatchObject({ code: 'EROFS' });
      await k.umount(target);
      await disk.remove();
    } finally {
      run('chattr', ['-i', image]);
    }
  });

  test('a disk cannot be removed while mounted', async () => {
    const image = join(work, 'busy.img');
    FILESYSTEMS[0].make(image);
    const disk = await k.addDisk(image);
    const target = await k.mount(disk);
    await expect(disk.remove()).rejects.toMatchObject({ code: 'EBUSY' });
    await k.umount(target);
    await disk.remove();
  });
});

describe('fuzzing', () => {
  test('300 randomly corrupted ext4 images: each an error or a readable tree, never a hang or a crash', async () => {
    const source = tempDir('lkl-um-fuzz-src-');
    writeHostTree(source, {
      a: null,
      'a/b': null,
      'a/b/file': 'x'.repeat(5000),
      'a/other': 'y',
      top: 'z'.repeat(100000),
    });
    const base = join(work, 'fuzz-base.img');
    writeFileSync(base, '');
    truncateSync(base, 4 << 20);
    run('mkfs.ext4', ['-q', '-F', '-d', source, base]);
    const pristine = readFileSync(base);

    let fuzzer = await Kernel.boot({ memory: '128M' });
    const outcome = { readable: 0, refused: 0, crashed: 0 };
    const image = join(work, 'fuzz.img');
    for (let i = 0; i < 300; i++) {
      const bytes = Buffer.from(pristine);
      for (let j = 0; j < 16; j++) bytes[Math.floor(Math.random() * (256 << 10))] = Math.floor(Math.random() * 256);
      writeFileSync(image, bytes);
      const attempt = (async () => {
        const disk = await fuzzer.addDisk(image, { readOnly: true });
        try {
          const target = await fuzzer.mount(disk, { type: 'ext4' });
          try {
            await readKernelTree(fuzzer, target);
          } finally {
            await fuzzer.umount(target, { lazy: true });
          }
        } finally {
          await disk.remove().catch(() => undefined);
        }
      })();
      let hang: NodeJS.Timeout | undefined;
      const result = await Promise.race([
        attempt.then(
          () => 'readable',
          (e: Error & { code?: string }) => (e.code === 'ESHUTDOWN' ? 'crashed' : 'refused'),
        ),
        new Promise<string>((r) => (hang = setTimeout(() => r('hung'), 20_000))),
      ]);
      clearTimeout(hang); // 300 timers left running kept jest from exiting
      expect(result).not.toBe('hung');
      outcome[result as keyof typeof outcome]++;
      if (result === 'crashed') {
        await fuzzer.shutdown().catch(() => undefined);
        fuzzer = await Kernel.boot({ memory: '128M' });
      }
    }
    await fuzzer.shutdown().catch(() => undefined);
    console.log(`fuzzing: ${JSON.stringify(outcome)}`);
    expect(outcome.readable + outcome.refused + outcome.crashed).toBe(300);
    rmSync(source, { recursive: true });
  });
});
