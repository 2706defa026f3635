// The boot test again, through the TypeScript API, and the kernel's life:
// many calls at once, two kernels, a killed kernel process, a Node process
// that goes away.
import { execFileSync, spawn } from 'node:child_process';
import { join } from 'node:path';
import { CONSTANTS as C, Kernel, KernelError, STRUCTS } from '../src';

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    // A zombie of ours counts as gone: reap it first.
    if (!alive(pid) || /State:\s+Z/.test(procStatus(pid))) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

/* `promise`, or a rejection naming `what` if it has not settled in 30 s: a hang says where. */
function settles<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: still waiting after 30 s`)), 30_000)));
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

function procStatus(pid: number): string {
  try {
    return execFileSync('cat', [`/proc/${pid}/status`]).toString();
  } catch {
    return '';
  }
}

describe('a kernel', () => {
  let k: Kernel;
  beforeAll(async () => {
    k = await Kernel.boot({ memory: '128M' });
  });
  afterAll(() => k.shutdown());

  test('boots and answers system calls as pid 1, root', async () => {
    expect(await k.sys.getpid()).toBe(1);
    expect(await k.sys.getuid()).toBe(0);
    expect(k.pid).toBeGreaterThan(1);
  });

  test('umask round trip', async () => {
    const old = await k.sys.umask(0o077);
    expect(await k.sys.umask(old)).toBe(0o077);
  });

  test('open, write, lseek, read, fstat through sys', async () => {
    const path = k.alloc(64);
    const data = k.alloc(64);
    const st = k.alloc(STRUCTS.stat.size);
    try {
      const fd = await k.sys.openat(C.AT_FDCWD, path.cstring('/sys-test'), C.O_RDWR | C.O_CREAT, 0o600);
      data.bytes.write('The quick brown fox');
      expect(await k.sys.write(fd, data.address, 19)).toBe(19);
      expect(await k.sys.lseek(fd, 4, C.SEEK_SET)).toBe(4);
      data.bytes.fill(0);
      expect(await k.sys.read(fd, data.address, 5)).toBe(5);
      expect(data.bytes.subarray(0, 5).toString()).toBe('quick');
      expect(await k.sys.lseek(fd, -3, C.SEEK_END)).toBe(16);
      expect(await k.sys.lseek(fd, 1, C.SEEK_CUR)).toBe(17);
      await k.sys.fstat(fd, st.address);
      expect(st.bytes.readBigInt64LE(STRUCTS.stat.fields.st_size[0])).toBe(19n);
      await k.sys.close(fd);
      await expect(k.sys.close(fd)).rejects.toMatchObject({ code: 'EBADF', syscall: 'close' });
      await expect(k.sys.openat(C.AT_FDCWD, path.cstring('/missing'), C.O_RDONLY, 0)).rejects.toMatchObject({
        code: 'ENOENT',
      });
    } finally {
      path.free();
      data.free();
      st.free();
    }
  });

  test('nanosleep sleeps', async () => {
    const ts = k.alloc(STRUCTS.timespec.size);
    ts.bytes.fill(0);
    ts.bytes.writeBigInt64LE(30_000_000n, STRUCTS.timespec.fields.tv_nsec[0]);
    const t0 = process.hrtime.bigint();
    await k.sys.nanosleep(ts.address, 0);
    expect(Number(process.hrtime.bigint() - t0) / 1e6).toBeGreaterThanOrEqual(29);
    ts.free();
  });

  test('a blocked call does not hold up the others', async () => {
    const fds = k.alloc(8);
    const buf = k.alloc(8);
    await k.sys.pipe2(fds.address, 0);
    const [r, w] = [fds.bytes.readInt32LE(0), fds.bytes.readInt32LE(4)];
    const blocked = k.sys.read(r, buf.address, 8);
    for (let i = 0; i < 100; i++) expect(await k.sys.getpid()).toBe(1);
    buf.bytes.write('wake up!');
    await k.sys.write(w, buf.address, 8);
    expect(await blocked).toBe(8);
    await k.sys.close(r);
    await k.sys.close(w);
    fds.free();
    buf.free();
  });

  test('boots with /dev, /proc and /sys mounted', async () => {
    const mounts = await k.mounts();
    expect(mounts.map((m) => [m.target, m.type])).toEqual(
      expect.arrayContaining([
        ['/dev', 'devtmpfs'],
        ['/proc', 'proc'],
        ['/sys', 'sysfs'],
      ]),
    );
    expect(await k.fs.readdir('/dev')).toContain('null');
  });

  test('mounts proc and sysfs again elsewhere, lists them, unmounts', async () => {
    await k.fs.mkdir('/proc2');
    await k.fs.mkdir('/sys2');
    const args = k.alloc(64);
    args.bytes.write('proc\0/proc2\0sysfs\0/sys2\0');
    await k.sys.mount(args.address, args.address + 5, args.address, 0, 0);
    await k.sys.mount(args.address + 12, args.address + 18, args.address + 12, 0, 0);
    expect(await k.fs.readdir('/proc2')).toEqual(expect.arrayContaining(['self', '1', 'mounts']));
    expect(await k.fs.readFile('/proc2/self/mounts', 'utf8')).toMatch(/^proc \/proc2 proc /m);
    expect(await k.fs.readdir('/sys2')).toEqual(expect.arrayContaining(['kernel', 'block', 'fs']));
    await k.sys.umount2(args.address + 5, 0);
    await k.sys.umount2(args.address + 18, 0);
    expect(await k.fs.readdir('/proc2')).toEqual([]);
    args.free();
  });

  test('1000 calls at once', async () => {
    const results = await Promise.all(Array.from({ length: 1000 }, () => k.sys.getppid()));
    expect(results).toEqual(new Array(1000).fill(0));
    expect(k.inFlight).toBe(0);
  });

  test('5000 calls at once, more than there are slots', async () => {
    const results = await Promise.all(Array.from({ length: 5000 }, (_, i) => k.sys.umask(i & 0o777)));
    expect(results).toHaveLength(5000);
  });

  test('pointers outside the window give EFAULT, and never crash the kernel', async () => {
    await expect(k.sys.uname(0x1000)).rejects.toMatchObject({ code: 'EFAULT' });
    await expect(k.sys.uname(k.windowBase + k.memory.length - 8)).rejects.toMatchObject({ code: 'EFAULT' });
    expect(await k.sys.getpid()).toBe(1);
  });

  test('calls that need a user address space are not implemented', async () => {
    await expect(k.sys.fork()).rejects.toMatchObject({ code: 'ENOSYS', syscall: 'fork' });
    await expect(k.sys.execve(0, 0, 0)).rejects.toMatchObject({ code: 'ENOSYS' });
    await expect(k.sys.mmap(0, 4096, 3, 0x22, -1, 0)).rejects.toMatchObject({ code: 'ENOSYS' });
  });

  test('futexes are not implemented, and never crash the kernel', async () => {
    // FUTEX_WAKE_OP faults its second word in: through an mm the kernel's tasks lack.
    const FUTEX_WAKE_OP = 5;
    const FUTEX_PRIVATE_FLAG = 128;
    await k.withBuffer(8, async (word) => {
      await expect(k.sys.futex(word.address, FUTEX_WAKE_OP | FUTEX_PRIVATE_FLAG, 1, 1, word.address + 4, 0)).rejects.toMatchObject({
        code: 'ENOSYS',
      });
    });
    expect(await k.sys.getpid()).toBe(1);
  });
});

describe('kernels coming and going', () => {
  test('two kernels at once are independent', async () => {
    const [a, b] = await Promise.all([Kernel.boot(), Kernel.boot()]);
    await a.fs.writeFile('/only-in-a', 'a');
    await expect(b.fs.access('/only-in-a')).rejects.toMatchObject({ code: 'ENOENT' });
    await a.shutdown();
    expect(await b.sys.getpid()).toBe(1);
    await expect(a.sys.getpid()).rejects.toMatchObject({ code: 'ESHUTDOWN' });
    await b.shutdown();
  });

  test('an operation of several calls still going at shutdown() fails at its next call', async () => {
    // However fast the kernel is, the writes after the open come too late.
    for (const size of [1, 1, 1, 8 << 20, 8 << 20, 8 << 20]) {
      const k = await settles(Kernel.boot(), 'boot');
      const writing = k.fs.writeFile('/big', Buffer.alloc(size));
      const down = settles(k.shutdown(), 'shutdown');
      await expect(settles(writing, 'writeFile')).rejects.toMatchObject({ code: 'ESHUTDOWN' });
      await down;
    }
  });

  test('a call that ends while shutdown() waits for it gets its result', async () => {
    // The halt takes such results off the ring itself: no doorbell rings
    // for them, and the kernel's handle closes right after.
    for (let i = 0; i < 5; i++) {
      const k = await settles(Kernel.boot(), 'boot');
      const ts = k.alloc(STRUCTS.timespec.size);
      ts.bytes.fill(0);
      ts.bytes.writeBigInt64LE(50_000_000n, STRUCTS.timespec.fields.tv_nsec[0]);
      const sleeping = k.sys.nanosleep(ts.address, 0);
      await settles(k.shutdown(), 'shutdown');
      expect(await settles(sleeping, 'nanosleep')).toBe(0);
    }
  });

  test('a killed kernel process rejects every pending and later call', async () => {
    const k = await Kernel.boot();
    const fds = k.alloc(8);
    const buf = k.alloc(8);
    await k.sys.pipe2(fds.address, 0);
    const pending = Array.from({ length: 10 }, () => k.sys.read(fds.bytes.readInt32LE(0), buf.address, 8));
    await new Promise((r) => setTimeout(r, 50));
    process.kill(k.pid, 'SIGKILL');
    for (const p of pending) {
      await expect(p).rejects.toThrow(/ESHUTDOWN: the kernel is gone/);
    }
    await expect(k.fs.readdir('/')).rejects.toBeInstanceOf(KernelError);
    await expect(k.shutdown()).rejects.toThrow(/did not power off cleanly/);
  });

  test('a kernel whose Node process exits goes down by itself', async () => {
    const script = `
      const { Kernel } = require(${JSON.stringify(join(__dirname, '../dist'))});
      Kernel.boot().then(async (k) => {
        await k.fs.writeFile('/x', 'y');
        console.log(k.pid);
        ${'' /* no shutdown: the process just ends */}
      });`;
    const pid = Number(execFileSync(process.execPath, ['-e', script]).toString().trim());
    expect(pid).toBeGreaterThan(1);
    expect(await waitGone(pid, 30_000)).toBe(true);
  });

  test('a kernel whose Node process is killed goes down by itself', async () => {
    const script = `
      const { Kernel } = require(${JSON.stringify(join(__dirname, '../dist'))});
      Kernel.boot().then((k) => { console.log(k.pid); setInterval(() => k.sys.getpid(), 1); });`;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const pid = await new Promise<number>((resolve) => child.stdout.once('data', (d) => resolve(Number(d))));
    child.kill('SIGKILL');
    expect(await waitGone(pid, 30_000)).toBe(true);
  });

  test('a kernel that cannot boot says why', async () => {
    await expect(Kernel.boot({ cmdline: 'mem=1K' })).rejects.toThrow(/while booting/);
    await expect(Kernel.boot({ kernel: '/nonexistent/lkl-um-kernel' })).rejects.toThrow(
      /\/nonexistent\/lkl-um-kernel/,
    );
  });
});
