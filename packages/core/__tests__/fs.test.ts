// kernel.fs against the kernel's tmpfs: every call, its results and its
// errors, compared where it makes sense with what node:fs does on the host.
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, promises as hostFs, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CONSTANTS as C, Kernel, KernelError } from '../src';

let k: Kernel;
beforeAll(async () => {
  k = await Kernel.boot({ memory: '1G' });
  await k.fs.mkdir('/t');
});
afterAll(() => k.shutdown());

const fs = () => k.fs;

describe('files', () => {
  test('writeFile, readFile, appendFile', async () => {
    await fs().writeFile('/t/a', 'hello');
    expect(await fs().readFile('/t/a', 'utf8')).toBe('hello');
    await fs().appendFile('/t/a', ', world');
    expect((await fs().readFile('/t/a')).toString()).toBe('hello, world');
    await fs().writeFile('/t/a', Buffer.from([0, 1, 2]));
    expect([...(await fs().readFile('/t/a'))]).toEqual([0, 1, 2]);
    await expect(fs().writeFile('/t/a', 'x', { flag: 'wx' })).rejects.toMatchObject({
      code: 'EEXIST',
      syscall: 'open',
      path: '/t/a',
    });
  });

  test('large files go in chunks and come back whole', async () => {
    const data = randomBytes(40 * 1024 * 1024 + 12345);
    await fs().writeFile('/t/big', data);
    expect((await fs().stat('/t/big')).size).toBe(data.length);
    expect((await fs().readFile('/t/big')).equals(data)).toBe(true);
  });

  test('open and a FileHandle: read, write, readv, writev, positions', async () => {
    const fh = await fs().open('/t/fh', 'w+', 0o640);
    try {
      expect((await fh.write('0123456789')).bytesWritten).toBe(10);
      expect((await fh.write(Buffer.from('abc'), 0, 3, 2)).bytesWritten).toBe(3);
      const { bytesRead, buffer } = await fh.read(Buffer.alloc(10), 0, 10, 0);
      expect(bytesRead).toBe(10);
      expect(buffer.toString()).toBe('01abc56789');
      await fh.writev([Buffer.from('XY'), Buffer.from('Z')], 7);
      const parts = [Buffer.alloc(3), Buffer.alloc(4)];
      expect((await fh.readv(parts, 3)).bytesRead).toBe(7);
      expect(Buffer.concat(parts).toString()).toBe('bc56XYZ');
      await fh.truncate(4);
      expect((await fh.stat()).size).toBe(4);
      await fh.sync();
      await fh.datasync();
      await fh.chmod(0o600);
      await fh.chown(12, 34);
      await fh.utimes(1_000_000_000, new Date(2_000_000_000_000));
      const st = await fh.stat({ bigint: true });
      expect(st.mode & 0o7777n).toBe(0o600n);
      expect([st.uid, st.gid]).toEqual([12n, 34n]);
      expect(st.atimeNs).toBe(1_000_000_000_000_000_000n);
      expect(st.mtimeMs).toBe(2_000_000_000_000n);
      expect(await fh.readFile('utf8')).toBe('');
    } finally {
      await fh.close();
    }
    await expect(fh.close()).resolves.toBeUndefined();
  });

  test('reading from the file position, and appending', async () => {
    await fs().writeFile('/t/pos', 'abcdef');
    const fh = await fs().open('/t/pos', 'a+');
    await fh.write('gh');
    const b = Buffer.alloc(3);
    expect((await fh.read(b, 0, 3, 0)).bytesRead).toBe(3);
    await fh.close();
    expect(await fs().readFile('/t/pos', 'utf8')).toBe('abcdefgh');
  });

  test('truncate and copyFile keep content and mode', async () => {
    await fs().writeFile('/t/src', 'copy me please', { mode: 0o751 });
    await fs().truncate('/t/src', 7);
    await fs().copyFile('/t/src', '/t/dst');
    expect(await fs().readFile('/t/dst', 'utf8')).toBe('copy me');
    expect((await fs().stat('/t/dst')).mode & 0o777).toBe(0o751);
    await expect(fs().copyFile('/t/src', '/t/dst', 1)).rejects.toMatchObject({ code: 'EEXIST' });
  });
});

describe('as node:fs has them, where it was easy to get wrong', () => {
  test('writes and reads at the file position, many at once on one handle: none lost, none twice', async () => {
    const fh = await fs().open('/t/log', 'w+');
    try {
      const lines = Array.from({ length: 100 }, (_, i) => `line ${String(i).padStart(3, '0')}\n`);
      await Promise.all(lines.map((l) => fh.write(l)));
      expect(await fs().readFile('/t/log', 'utf8')).toBe(lines.join('')); // in the order called
    } finally {
      await fh.close();
    }
    const reader = await fs().open('/t/log', 'r');
    try {
      const reads = await Promise.all(Array.from({ length: 5 }, () => reader.read(Buffer.alloc(2), 0, 2, null)));
      expect(reads.map((r) => r.buffer.toString())).toEqual(['li', 'ne', ' 0', '00', '\nl']);
    } finally {
      await reader.close();
    }
  });

  test('close() lets the reads and writes already called finish; writev at the position is one piece', async () => {
    const fh = await fs().open('/t/closing', 'w+');
    const big = randomBytes(3 << 20);
    const writes = [fh.write(big), fh.write('y')];
    await fh.close();
    expect((await Promise.all(writes)).map((w) => w.bytesWritten)).toEqual([big.length, 1]);
    await expect(fh.write('late')).rejects.toMatchObject({ code: 'EBADF' });
    expect((await fs().stat('/t/closing')).size).toBe(big.length + 1);

    const v = await fs().open('/t/writev', 'w');
    try {
      const A = Buffer.from('A'), B = Buffer.from('B'), Cc = Buffer.from('C'), D = Buffer.from('D');
      await Promise.all([v.writev([A, B]), v.writev([Cc, D])]);
    } finally {
      await v.close();
    }
    expect(await fs().readFile('/t/writev', 'utf8')).toBe('ABCD');
  });

  test('a closed handle refuses, though its fd number is another file\'s now', async () => {
    await fs().writeFile('/t/A', 'AAAA');
    await fs().writeFile('/t/B', 'BBBB');
    const b = await fs().open('/t/B', 'r+');
    await b.close();
    const a = await fs().open('/t/A', 'r+'); // may get b's number
    try {
      await expect(b.write('ZZ', 0)).rejects.toMatchObject({ code: 'EBADF', message: "EBADF: file closed, write '/t/B'" });
      await expect(b.truncate(1)).rejects.toMatchObject({ code: 'EBADF' });
      await expect(b.read(Buffer.alloc(1), 0, 1, 0)).rejects.toMatchObject({ code: 'EBADF' });
    } finally {
      await a.close();
    }
    expect(await fs().readFile('/t/A', 'utf8')).toBe('AAAA');
  });

  test('copyFile onto itself (or a link to it) leaves it whole', async () => {
    await fs().writeFile('/t/self', 'keep me');
    await fs().symlink('/t/self', '/t/self-link');
    await fs().copyFile('/t/self', '/t/self');
    await fs().copyFile('/t/self', '/t/self-link');
    expect(await fs().readFile('/t/self', 'utf8')).toBe('keep me');
    await expect(fs().copyFile('/t/self', '/t/self', 1 /* COPYFILE_EXCL */)).rejects.toMatchObject({ code: 'EEXIST' });
  });

  test('writeFile of data that is not data throws before the file is touched', async () => {
    await fs().writeFile('/t/precious', 'precious');
    await expect(fs().writeFile('/t/precious', undefined as unknown as string)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    expect(await fs().readFile('/t/precious', 'utf8')).toBe('precious');
  });

  test('a NUL byte in a path is refused, not cut at', async () => {
    await fs().writeFile('/t/victim', 'x');
    await expect(fs().rm('/t/victim\0.bak')).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    await expect(fs().unlink(Buffer.from('/t/victim\0.bak'))).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    expect(await fs().readFile('/t/victim', 'utf8')).toBe('x');
  });

  test('modes as octal strings, as node:fs takes them', async () => {
    await fs().mkdir('/t/m700', { mode: '700' });
    expect((await fs().stat('/t/m700')).mode & 0o7777).toBe(0o700);
    await fs().writeFile('/t/m600', 'x', { mode: '600' });
    expect((await fs().stat('/t/m600')).mode & 0o7777).toBe(0o600);
    await fs().chmod('/t/m600', '640');
    expect((await fs().stat('/t/m600')).mode & 0o7777).toBe(0o640);
    await expect(fs().chmod('/t/m600', '9x')).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
  });

  test('utimes with a Date keeps its milliseconds exactly', async () => {
    await fs().writeFile('/t/when', 'x');
    const when = new Date(Date.UTC(2000, 0, 1, 0, 0, 0, 123));
    await fs().utimes('/t/when', when, when);
    expect((await fs().stat('/t/when', { bigint: true })).mtimeNs).toBe(946684800123000000n);
  });

  test('readdir recursive lists what node:fs lists for the same tree', async () => {
    const host = mkdtempSync(join(tmpdir(), 'lkl-um-readdir-'));
    try {
      for (const d of ['d', 'd/e', 'f']) {
        await fs().mkdir(`/t/rec/${d}`, { recursive: true });
        mkdirSync(join(host, d), { recursive: true });
      }
      for (const f of ['a', 'd/b', 'd/e/c']) {
        await fs().writeFile(`/t/rec/${f}`, f);
        writeFileSync(join(host, f), f);
      }
      const want = readdirSync(host, { recursive: true }) as string[];
      expect(await fs().readdir('/t/rec', { recursive: true })).toEqual(want); // in node:fs's order too
      const typed = await fs().readdir('/t/rec', { recursive: true, withFileTypes: true });
      expect(typed.map((d) => `${d.parentPath}/${d.name}:${d.isDirectory()}`).sort()).toEqual(
        ['a:false', 'd:true', 'd/b:false', 'd/e:true', 'd/e/c:false', 'f:true'].map((x) => {
          const [p, t] = x.split(':');
          return `/t/rec${p.includes('/') ? `/${p.slice(0, p.lastIndexOf('/'))}` : ''}/${p.slice(p.lastIndexOf('/') + 1)}:${t}`;
        }).sort(),
      );
    } finally {
      rmSync(host, { recursive: true, force: true });
    }
  });

  test('rm -r removes names that are not UTF-8', async () => {
    await fs().mkdir('/t/latin');
    await fs().writeFile(Buffer.from('/t/latin/caf\xe9.txt', 'latin1'), 'x');
    await fs().rm('/t/latin', { recursive: true });
    await expect(fs().stat('/t/latin')).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('status', () => {
  test('stat and lstat, numbers and bigints with nanoseconds', async () => {
    await fs().writeFile('/t/s', '12345');
    await fs().symlink('s', '/t/s-link');
    await fs().utimes('/t/s', 1_600_000_000_123_456_789n, 1_700_000_000_987_654_321n);
    const st = await fs().stat('/t/s-link');
    expect(st.isFile()).toBe(true);
    expect(st.size).toBe(5);
    expect(st.nlink).toBe(1);
    expect(st.ino).toBeGreaterThan(0);
    expect(st.mtimeMs).toBeCloseTo(1_700_000_000_987.654, 2);
    const big = await fs().stat('/t/s', { bigint: true });
    expect(big.atimeNs).toBe(1_600_000_000_123_456_789n);
    expect(big.mtimeNs).toBe(1_700_000_000_987_654_321n);
    expect(big.blocks).toBeGreaterThan(0n);
    const l = await fs().lstat('/t/s-link');
    expect(l.isSymbolicLink()).toBe(true);
    await fs().lutimes('/t/s-link', 5, 6.5);
    expect((await fs().lstat('/t/s-link', { bigint: true })).mtimeNs).toBe(6_500_000_000n);
  });

  test('chmod, chown, lchown, access', async () => {
    await fs().writeFile('/t/m', '');
    await fs().chmod('/t/m', 0o4755);
    expect((await fs().stat('/t/m')).mode & 0o7777).toBe(0o4755);
    await fs().chown('/t/m', 1234, 5678);
    expect((await fs().stat('/t/m')).uid).toBe(1234);
    await fs().symlink('m', '/t/m-link');
    await fs().lchown('/t/m-link', 42, 43);
    expect((await fs().lstat('/t/m-link')).gid).toBe(43);
    expect((await fs().stat('/t/m-link')).gid).toBe(5678);
    await fs().access('/t/m');
    await expect(fs().access('/t/none')).rejects.toMatchObject({ code: 'ENOENT', syscall: 'access' });
  });

  test('mknod makes FIFOs and devices', async () => {
    await fs().mknod('/t/fifo', C.S_IFIFO | 0o644);
    expect((await fs().stat('/t/fifo')).isFIFO()).toBe(true);
    await fs().mknod('/t/null', C.S_IFCHR | 0o666, (1 << 8) | 3);
    const st = await fs().stat('/t/null');
    expect(st.isCharacterDevice()).toBe(true);
    expect(st.rdev).toBe((1 << 8) | 3);
  });

  test('a read of a FIFO gives what it holds, as node:fs does, without waiting for more', async () => {
    await fs().mknod('/t/fifo-read', C.S_IFIFO | 0o644);
    const h = await fs().open('/t/fifo-read', 'r+'); // reader and writer at once: the open does not wait
    try {
      await h.write('abc');
      const read = h.read(Buffer.alloc(100), 0, 100);
      const hung = new Promise<string>((r) => setTimeout(() => r('still waiting'), 30_000).unref());
      const first = await Promise.race([read, hung]);
      expect(first).not.toBe('still waiting');
      const { bytesRead, buffer } = await read;
      expect(buffer.subarray(0, bytesRead).toString()).toBe('abc');
    } finally {
      await h.close();
    }
  });

  test('statfs', async () => {
    const s = await fs().statfs('/t');
    expect(s.type).toBe(0x01021994); // TMPFS_MAGIC
    expect(s.blocks).toBeGreaterThan(0);
    expect(typeof (await fs().statfs('/t', { bigint: true })).bfree).toBe('bigint');
  });
});

describe('names and directories', () => {
  test('mkdir recursive returns the first directory made', async () => {
    expect(await fs().mkdir('/t/d1/d2/d3', { recursive: true })).toBe('/t/d1');
    expect(await fs().mkdir('/t/d1/d2/d3', { recursive: true })).toBeUndefined();
    await expect(fs().mkdir('/t/d1')).rejects.toMatchObject({ code: 'EEXIST', syscall: 'mkdir' });
    await fs().writeFile('/t/file', '');
    await expect(fs().mkdir('/t/file/sub', { recursive: true })).rejects.toMatchObject({ code: 'ENOTDIR' });
  });

  test('readdir sorted, with types; opendir iterates', async () => {
    await fs().mkdir('/t/r');
    for (const name of ['b', 'a', 'ü', 'c']) await fs().writeFile(`/t/r/${name}`, name);
    await fs().mkdir('/t/r/dir');
    expect(await fs().readdir('/t/r')).toEqual(['a', 'b', 'c', 'dir', 'ü']);
    const typed = await fs().readdir('/t/r', { withFileTypes: true });
    expect(typed.map((d) => [d.name, d.isDirectory(), d.parentPath])).toContainEqual(['dir', true, '/t/r']);
    const seen: string[] = [];
    for await (const d of await fs().opendir('/t/r')) seen.push(d.name);
    expect(seen.sort()).toEqual(['a', 'b', 'c', 'dir', 'ü']);
    await expect(fs().readdir('/t/r/a')).rejects.toMatchObject({ code: 'ENOTDIR' });
  });

  test('a directory of many entries', async () => {
    await fs().mkdir('/t/many');
    await Promise.all(Array.from({ length: 2000 }, (_, i) => fs().writeFile(`/t/many/${i}`, '')));
    expect(await fs().readdir('/t/many')).toHaveLength(2000);
  });

  test('rename, link, symlink, readlink, unlink, rmdir, rm', async () => {
    await fs().writeFile('/t/n1', 'x');
    await fs().rename('/t/n1', '/t/n2');
    await expect(fs().access('/t/n1')).rejects.toMatchObject({ code: 'ENOENT' });
    await fs().writeFile('/t/n3', 'y');
    await expect(fs().rename('/t/n2', '/t/n3', C.RENAME_NOREPLACE)).rejects.toMatchObject({
      code: 'EEXIST',
      path: '/t/n2',
      dest: '/t/n3',
    });
    await fs().rename('/t/n2', '/t/n3', C.RENAME_EXCHANGE);
    expect(await fs().readFile('/t/n3', 'utf8')).toBe('x');
    await fs().link('/t/n3', '/t/n4');
    expect((await fs().stat('/t/n3')).nlink).toBe(2);
    await fs().symlink('/t/n3', '/t/n5');
    expect(await fs().readlink('/t/n5')).toBe('/t/n3');
    await fs().unlink('/t/n4');
    await fs().mkdir('/t/tree/a/b', { recursive: true });
    await fs().writeFile('/t/tree/a/b/f', '');
    await expect(fs().rmdir('/t/tree')).rejects.toMatchObject({ code: 'ENOTEMPTY' });
    await expect(fs().rm('/t/tree')).rejects.toMatchObject({ code: 'ERR_FS_EISDIR', syscall: 'rm', path: '/t/tree' });
    await fs().rm('/t/tree', { recursive: true });
    await expect(fs().stat('/t/tree')).rejects.toMatchObject({ code: 'ENOENT' });
    await fs().rm('/t/tree', { force: true });
    await expect(fs().unlink('/t')).rejects.toMatchObject({ code: 'EISDIR' });
  });

  test('cp copies a tree as node:fs\'s cp does on the host, options and errors too', async () => {
    // The same tree on both sides.
    const host = mkdtempSync(join(tmpdir(), 'lkl-um-cp-'));
    type Fs = Pick<typeof hostFs, 'mkdir' | 'writeFile' | 'symlink' | 'chmod' | 'utimes'>;
    const make = async (f: Fs, base: string) => {
      await f.mkdir(`${base}/s/d/ro`, { recursive: true });
      await f.writeFile(`${base}/s/d/f`, 'hi', { mode: 0o640 });
      await f.writeFile(`${base}/s/x`, 'skip me');
      await f.symlink('d/f', `${base}/s/rel`);
      await f.symlink('/elsewhere', `${base}/s/abs`);
      await f.chmod(`${base}/s/d/ro`, 0o555);
      await f.utimes(`${base}/s/d/f`, 1000, 2000);
    };
    await make(hostFs, host);
    await make(fs() as unknown as Fs, '/t/cp');
    // What a copy holds, named from its top: mode, size or target (with base taken out), mtime if kept.
    const survey = async (f: typeof hostFs, top: string, base: string, times: boolean) => {
      const out: string[] = [];
      for (const name of (await f.readdir(top, { recursive: true })).sort()) {
        const st = await f.lstat(`${top}/${name}`);
        const what = st.isSymbolicLink() ? (await f.readlink(`${top}/${name}`)).replace(base, 'BASE') : st.isFile() ? `${st.size}` : 'dir';
        out.push(`${name} ${st.mode.toString(8)} ${what} ${times && st.isFile() ? st.mtimeMs : ''}`);
      }
      return out;
    };
    const filter = (src: string) => !src.endsWith('/x');
    for (const [dest, options] of [
      ['plain', { recursive: true }],
      ['kept', { recursive: true, preserveTimestamps: true, verbatimSymlinks: true, filter }],
    ] as const) {
      await hostFs.cp(`${host}/s`, `${host}/${dest}`, options);
      await fs().cp('/t/cp/s', `/t/cp/${dest}`, options);
      const times = 'preserveTimestamps' in options;
      const theirs = await survey(hostFs, `${host}/${dest}`, host, times);
      expect(await survey(fs() as unknown as typeof hostFs, `/t/cp/${dest}`, '/t/cp', times)).toEqual(theirs);
      expect(theirs.length).toBeGreaterThan(4);
    }

    // Onto what exists: replaced (force), skipped, or refused (errorOnExist).
    for (const f of [hostFs, fs()] as (typeof hostFs)[]) {
      const base = f === hostFs ? host : '/t/cp';
      await f.writeFile(`${base}/s/x`, 'new');
      await f.cp(`${base}/s/x`, `${base}/plain/x`, { force: false });
      expect(await f.readFile(`${base}/plain/x`, 'utf8')).toBe('skip me');
      await f.cp(`${base}/s/x`, `${base}/plain/x`);
      expect(await f.readFile(`${base}/plain/x`, 'utf8')).toBe('new');
      await expect(f.cp(`${base}/s/x`, `${base}/plain/x`, { force: false, errorOnExist: true })).rejects.toMatchObject({ code: 'ERR_FS_CP_EEXIST' });
      await expect(f.cp(`${base}/s`, `${base}/t`)).rejects.toMatchObject({ code: 'ERR_FS_EISDIR' });
      await expect(f.cp(`${base}/s`, `${base}/s/d/in`, { recursive: true })).rejects.toMatchObject({ code: 'ERR_FS_CP_EINVAL' });
      await expect(f.cp(`${base}/s/x`, `${base}/s/x`)).rejects.toMatchObject({ code: 'ERR_FS_CP_EINVAL' });
      await expect(f.cp(`${base}/s/d`, `${base}/s/x`, { recursive: true })).rejects.toMatchObject({ code: 'ERR_FS_CP_DIR_TO_NON_DIR' });
      await expect(f.cp(`${base}/s/x`, `${base}/s/d`)).rejects.toMatchObject({ code: 'ERR_FS_CP_NON_DIR_TO_DIR' });
      await expect(f.cp(`${base}/missing`, `${base}/m`)).rejects.toMatchObject({ code: 'ENOENT', syscall: 'lstat' });
    }
    rmSync(host, { recursive: true, force: true });

    // Where it differs, for images: a device is made, not read; names need not be UTF-8.
    await fs().mkdir('/t/cp/dev');
    await fs().mknod('/t/cp/dev/null', C.S_IFCHR | 0o666, (1 << 8) | 3);
    await fs().writeFile(Buffer.from('/t/cp/dev/caf\xe9', 'latin1'), 'latin1');
    await fs().cp('/t/cp/dev', '/t/cp/dev2', { recursive: true });
    expect((await fs().lstat('/t/cp/dev2/null')).rdev).toBe((1 << 8) | 3);
    expect(await fs().readFile(Buffer.from('/t/cp/dev2/caf\xe9', 'latin1'), 'utf8')).toBe('latin1');
  });

  test('realpath resolves links, . and ..; mkdtemp makes a fresh 0700 directory', async () => {
    await fs().mkdir('/t/real/sub', { recursive: true });
    await fs().symlink('real/sub', '/t/via');
    expect(await fs().realpath('/t/via/../sub/.')).toBe('/t/real/sub');
    expect(await fs().realpath('/t//via/')).toBe('/t/real/sub');
    await expect(fs().realpath('/t/via/missing')).rejects.toMatchObject({ code: 'ENOENT', syscall: 'realpath' });

    const made = await Promise.all([1, 2, 3].map(() => fs().mkdtemp('/t/tmp-')));
    expect(new Set(made).size).toBe(3);
    for (const dir of made) {
      expect(dir).toMatch(/^\/t\/tmp-[A-Za-z0-9]{6}$/);
      expect((await fs().stat(dir)).mode & 0o7777).toBe(0o700);
    }
    await expect(fs().mkdtemp('/t/missing/tmp-')).rejects.toMatchObject({
      code: 'ENOENT',
      syscall: 'mkdtemp',
      path: '/t/missing/tmp-XXXXXX',
    });
  });
});

describe('extended attributes', () => {
  test('set, get, list, remove, and the l variants', async () => {
    await fs().writeFile('/t/x', '');
    await fs().symlink('x', '/t/x-link');
    await fs().setxattr('/t/x', 'user.one', 'first');
    await fs().setxattr('/t/x', 'user.two', Buffer.alloc(10000, 7));
    await fs().setxattr('/t/x', 'security.selinux', 'system_u:object_r:etc_t:s0\0');
    expect((await fs().getxattr('/t/x', 'user.one')).toString()).toBe('first');
    expect((await fs().getxattr('/t/x', 'user.two')).length).toBe(10000);
    expect((await fs().listxattr('/t/x-link')).sort()).toEqual(['security.selinux', 'user.one', 'user.two']);
    await expect(fs().setxattr('/t/x', 'user.one', 'again', C.XATTR_CREATE)).rejects.toMatchObject({
      code: 'EEXIST',
    });
    await fs().removexattr('/t/x', 'user.one');
    await expect(fs().getxattr('/t/x', 'user.one')).rejects.toMatchObject({ code: 'ENODATA' });
    await fs().lsetxattr('/t/x-link', 'trusted.link', 'on the link');
    expect(await fs().llistxattr('/t/x-link')).toEqual(['trusted.link']);
    expect((await fs().lgetxattr('/t/x-link', 'trusted.link')).toString()).toBe('on the link');
    await fs().lremovexattr('/t/x-link', 'trusted.link');
    expect(await fs().llistxattr('/t/x-link')).toEqual([]);
  });
});

describe('errors', () => {
  test('are Node-style', async () => {
    const e = await fs()
      .readFile('/t/no/such')
      .catch((err: unknown) => err);
    expect(e).toBeInstanceOf(KernelError);
    expect(e).toMatchObject({ code: 'ENOENT', errno: -2, syscall: 'open', path: '/t/no/such' });
    expect((e as Error).message).toBe("ENOENT: no such file or directory, open '/t/no/such'");
  });

  test('named by the call node:fs names: readdir fails in scandir, copyFile in copyfile', async () => {
    await expect(fs().readdir('/t/no/such')).rejects.toMatchObject({ code: 'ENOENT', syscall: 'scandir', path: '/t/no/such' });
    await expect(fs().opendir('/t/no/such')).rejects.toMatchObject({ code: 'ENOENT', syscall: 'opendir' });
    await expect(fs().copyFile('/t/no/such', '/t/copy')).rejects.toMatchObject({
      code: 'ENOENT',
      syscall: 'copyfile',
      path: '/t/no/such',
      dest: '/t/copy',
    });
  });

  test('EISDIR, ENOTDIR', async () => {
    await expect(fs().readFile('/t')).rejects.toMatchObject({ code: 'EISDIR' });
    await fs().writeFile('/t/plain', '');
    await expect(fs().stat('/t/plain/x')).rejects.toMatchObject({ code: 'ENOTDIR', syscall: 'stat' });
  });

  test('EACCES as a non-root user inside', async () => {
    await fs().writeFile('/t/secret', 'no', { mode: 0o600 });
    await fs().mkdir('/t/closed', 0o700);
    const old = await k.sys.setfsuid(1000);
    try {
      await expect(fs().readFile('/t/secret')).rejects.toMatchObject({ code: 'EACCES', path: '/t/secret' });
      await expect(fs().writeFile('/t/closed/f', '')).rejects.toMatchObject({ code: 'EACCES' });
      // Every hostcall task runs as that user, not only the one that asked.
      const results = await Promise.allSettled(Array.from({ length: 50 }, () => fs().readFile('/t/secret')));
      expect(results.every((r) => r.status === 'rejected')).toBe(true);
    } finally {
      await k.sys.setfsuid(old);
    }
    expect(await fs().readFile('/t/secret', 'utf8')).toBe('no');
  });

  test('a full filesystem gives ENOSPC, and what was written before stays', async () => {
    const args = k.alloc(64);
    args.bytes.write('tmpfs\0/t/small\0size=1m\0');
    await fs().mkdir('/t/small');
    await k.sys.mount(args.address, args.address + 6, args.address, 0, args.address + 15);
    args.free();
    await fs().writeFile('/t/small/keep', 'safe');
    await expect(fs().writeFile('/t/small/big', Buffer.alloc(4 << 20))).rejects.toMatchObject({ code: 'ENOSPC' });
    expect(await fs().readFile('/t/small/keep', 'utf8')).toBe('safe');
  });
});

describe('many calls at once', () => {
  test('30 000 calls through a 1 MiB window wait their turn, as node:fs would take them: none fails', async () => {
    const small = await Kernel.boot({ heapSize: 1 << 20 });
    try {
      const dir = '/a-directory-with-a-name-long-enough-to-count';
      await small.fs.mkdir(dir);
      const names = Array.from({ length: 1000 }, (_, i) => `${dir}/entry-${i}`);
      for (const name of names) await small.fs.writeFile(name, name);
      await small.fs.symlink('entry-0', `${dir}/link`);
      await small.fs.setxattr(names[0], 'user.kept', 'value');
      const when = new Date('2020-02-02T02:02:02.002Z');
      const calls = Array.from({ length: 30000 }, (_, i): Promise<unknown> => {
        const name = names[i % names.length];
        switch (i % 6) {
          case 0:
            return small.fs.stat(name).then((st) => st.size);
          case 1:
            return small.fs.readlink(`${dir}/link`);
          case 2:
            return small.fs.utimes(name, when, when);
          case 3:
            return small.fs.getxattr(names[0], 'user.kept').then(String);
          case 4:
            return small.fs.statfs(dir).then((s) => s.type);
          default:
            return small.fs.readFile(name, 'utf8');
        }
      });
      const results = await Promise.allSettled(calls);
      expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
      const values = results.map((r) => (r as PromiseFulfilledResult<unknown>).value);
      expect(values[0]).toBe(names[0].length);
      expect(values[1]).toBe('entry-0');
      expect(values[3]).toBe('value');
      expect(values[5]).toBe(names[5]);
      expect((await small.fs.stat(names[2])).mtime).toEqual(when);
    } finally {
      await small.shutdown();
    }
  });

  test('a small call does not wait behind a large one whose room a blocked call holds', async () => {
    const small = await Kernel.boot({ heapSize: 1 << 20 });
    try {
      const fds = small.alloc(8);
      await small.sys.pipe2(fds.address, 0);
      const [readEnd, writeEnd] = [fds.bytes.readInt32LE(0), fds.bytes.readInt32LE(4)];
      fds.free();
      // Blocked in read(2), holding 64 KiB, until something is written.
      const reading = small.withBuffer(64 << 10, (buf) => small.sys.read(readEnd, buf.address, 64 << 10));
      await new Promise((r) => setTimeout(r, 50));
      // All of the window: only once the reader is done.
      const large = small.withBuffer(1 << 20, async () => 'large');
      // The write the reader waits for: were it behind the large one, nothing would move.
      const writing = small.withBuffer(64, (buf) => {
        buf.bytes[0] = 42;
        return small.sys.write(writeEnd, buf.address, 1);
      });
      expect(await Promise.all([reading, writing, large])).toEqual([1, 1, 'large']);
    } finally {
      await small.shutdown();
    }
  });

  test('a window held full by alloc() with nothing in flight: ENOMEM at once, not a wait for ever', async () => {
    const small = await Kernel.boot({ heapSize: 1 << 20 });
    try {
      const held = [];
      for (;;) {
        try {
          held.push(small.alloc(4096));
        } catch {
          break;
        }
      }
      expect(() => small.alloc(4096)).toThrow(/^ENOMEM: alloc of 4096 bytes of window/);
      const started = Date.now();
      const full = await small.fs.stat('/').catch((e) => e);
      expect(full).toMatchObject({ code: 'ENOMEM', syscall: 'alloc', message: expect.stringMatching(/it is full, and no call in flight holds any of it/) });
      expect(full.path).toBeUndefined();
      expect(Date.now() - started).toBeLessThan(10_000); // not a wait for a free that never comes
      held.pop()!.free();
      expect((await small.fs.stat('/')).isDirectory()).toBe(true);
      for (const buf of held) buf.free();
    } finally {
      await small.shutdown();
    }
  });
});
