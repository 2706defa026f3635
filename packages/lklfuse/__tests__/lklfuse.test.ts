// lklfuse, run as the command it is, with real programs working in the
// mount: cp -a, tar, find, diff, git, flock.  After each unmount the image
// is checked by its fsck and read by the host's own means.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { CONSTANTS as C, host, splitMountOptions } from '../../core/src';
import { parseMountOptions } from '../src/cli';
import {
  childrenOf,
  expectSuccess,
  filesystem,
  imageWithDamagedDirectory,
  isRoot,
  run,
  tempDir,
  withImageOnFullHost,
} from '../../core/__tests__/helpers/images';
import { copyNeedingRecovery, makeTree, survey, withLoop } from '../../core/__tests__/helpers/tree';

jest.setTimeout(300_000);

const lklfuse = join(__dirname, '../bin/lklfuse.js');
const NOBODY = 65534;

function cli(args: string[], opts: { as?: number } = {}) {
  const argv = [lklfuse, ...args];
  const r =
    opts.as === undefined
      ? spawnSync(process.execPath, argv, { encoding: 'utf8' })
      : spawnSync('setpriv', [`--reuid=${opts.as}`, `--regid=${opts.as}`, '--clear-groups', process.execPath, ...argv], {
          encoding: 'utf8',
        });
  return r;
}

const mounted = (dir: string) => fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === dir);

/* Waits, with flock(1), until the lock= file is free: the kernel process has exited. */
function waitUnlocked(lock: string, seconds = 60): void {
  run('flock', ['-w', String(seconds), lock, 'true']);
}

/* Polls until `done()` holds, for at most a minute (a slow machine's); false if it never did. */
function waitFor(done: () => boolean): boolean {
  for (const deadline = Date.now() + 60_000; !done(); spawnSync('sleep', ['0.05'])) {
    if (Date.now() > deadline) return false;
  }
  return true;
}

/* Waits until no lklfuse server whose command line matches `pattern` runs; fails if one stays. */
function waitServerGone(pattern: string): void {
  expect(waitFor(() => spawnSync('pgrep', ['-f', `lklfuse-server.*${pattern}`]).status !== 0)).toBe(true);
}

/* Mounts with a lock file, so that unmount() can wait for the image to be closed. */
function mountImage(image: string, mnt: string, options = ''): { lock: string; unmount(): void } {
  const lock = `${image}.lock`;
  const r = cli(['-o', `lock=${lock}${options ? `,${options}` : ''}`, image, mnt]);
  if (r.status !== 0) throw new Error(`lklfuse failed (${r.status}): ${r.stderr}`);
  expect(mounted(mnt)).toBe(true);
  return {
    lock,
    unmount() {
      run('fusermount3', ['-u', mnt]);
      waitUnlocked(lock);
    },
  };
}

let work: string;
let tree: string;
let plain: string;

beforeAll(() => {
  if (!isRoot()) throw new Error('these tests make device nodes and loop mounts: run them as root');
  work = tempDir();
  fs.chmodSync(work, 0o755);
  tree = makeTree(work);
  // What every filesystem keeps, vfat included: directories and files.
  plain = join(work, 'plain');
  fs.cpSync(join(__dirname, '../../core/src'), plain, { recursive: true });
});

afterAll(() => {
  for (const l of fs.readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const dir = l.split(' ')[1];
    if (dir?.startsWith(work)) spawnSync('fusermount3', ['-u', dir]);
  }
  fs.rmSync(work, { recursive: true, force: true });
});

function freshImage(type: string, name = type): string {
  const image = join(work, `${name}.img`);
  fs.rmSync(image, { force: true });
  filesystem(type).make(image);
  return image;
}

function mountpoint(name: string): string {
  const dir = join(work, `mnt-${name}`);
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

/* Real programs in the mount; what they leave behind is compared after unmount. */
describe.each(['ext4', 'btrfs', 'xfs', 'vfat'])('%s', (type) => {
  const unix = type !== 'vfat';

  test('cp -a, tar, find, diff -r and git in the mount; fsck clean; the host sees the same', () => {
    const image = freshImage(type);
    const mnt = mountpoint(type);
    const m = mountImage(image, mnt);
    try {
      // cp -a in, and back out.
      run('cp', ['-a', plain, `${mnt}/plain`]);
      run('diff', ['-r', plain, `${mnt}/plain`]);
      if (unix) {
        run('cp', ['-a', tree, `${mnt}/tree`]);
        expect(survey(join(mnt, 'tree'))).toEqual(survey(tree));
        const out = join(work, `out-${type}`);
        run('cp', ['-a', `${mnt}/tree`, out]);
        expect(survey(out)).toEqual(survey(tree));
        fs.rmSync(out, { recursive: true });
      }

      // tar: an archive of the host's files matches the mount (tar -d;
      // vfat keeps neither modes nor odd seconds), and extracts into it.
      const archive = join(work, `${type}.tar`);
      run('tar', ['-cf', archive, '-C', work, 'plain']);
      if (unix) run('tar', ['-d', '-f', archive, '-C', mnt]);
      run('tar', ['-xf', archive, '-C', mnt, '--transform', 's/^plain/untarred/']);
      run('diff', ['-r', plain, `${mnt}/untarred`]);

      // find sees every entry, as on the host.
      const names = (root: string) => spawnSync('find', ['.'], { cwd: root, encoding: 'utf8' }).stdout.split('\n').sort();
      expect(names(join(mnt, 'plain'))).toEqual(names(plain));

      // git: init, add, commit, fsck.
      if (unix) {
        const repo = join(mnt, 'repo');
        const git = (...a: string[]) => run('git', ['-C', repo, '-c', 'user.name=t', '-c', 'user.email=t@example.org', ...a]);
        run('git', ['init', '-q', repo]);
        fs.cpSync(plain, join(repo, 'src'), { recursive: true });
        git('add', '.');
        git('commit', '-qm', 'first');
        fs.appendFileSync(join(repo, 'src/index.ts'), '// more\n');
        git('commit', '-qam', 'second');
        expect(git('log', '--format=%s').trim().split('\n')).toEqual(['second', 'first']);
        git('fsck', '--strict');
      }
    } finally {
      m.unmount();
    }
    expect(mounted(mnt)).toBe(false);

    // fsck clean, and the host's own reading matches.
    filesystem(type).fsck!(image);
    const seen = join(work, `seen-${type}`);
    fs.mkdirSync(seen);
    if (unix) {
      withLoop(image, (dir) => {
        expect(survey(join(dir, 'tree'))).toEqual(survey(tree));
        run('diff', ['-r', plain, join(dir, 'plain')]);
        run('diff', ['-r', plain, join(dir, 'untarred')]);
      });
    } else {
      filesystem(type).extract!(image, seen);
      run('diff', ['-r', plain, join(seen, 'plain')]);
      run('diff', ['-r', plain, join(seen, 'untarred')]);
    }
    fs.rmSync(seen, { recursive: true });
  });

  test('concurrent readers and writers', async () => {
    const image = freshImage(type);
    const mnt = mountpoint(type);
    const m = mountImage(image, mnt);
    try {
      // Eight writers of 1 MiB each, then sixteen readers while eight more write.
      const write = (name: string) =>
        exec('sh', ['-c', `head -c 1048576 /dev/urandom > ${name}.host && cp ${name}.host ${mnt}/${name}`], work);
      await Promise.all([...Array(8).keys()].map((i) => write(`a${i}`)));
      const reads = [...Array(16).keys()].map((i) => exec('cmp', [`${mnt}/a${i % 8}`, `a${i % 8}.host`], work));
      const writes = [...Array(8).keys()].map((i) => write(`b${i}`));
      await Promise.all([...reads, ...writes]);
      for (let i = 0; i < 8; i++) run('cmp', [join(mnt, `b${i}`), join(work, `b${i}.host`)]);
    } finally {
      m.unmount();
    }
    filesystem(type).fsck!(image);
    for (const f of fs.readdirSync(work).filter((n) => n.endsWith('.host'))) fs.unlinkSync(join(work, f));
  });
});

function exec(cmd: string, args: string[], cwd: string): Promise<void> {
  return new Promise((done, failed) => {
    const p = spawn(cmd, args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (c: Buffer) => (err += c.toString()));
    p.on('exit', (code) => (code === 0 ? done() : failed(new Error(`${cmd} ${args.join(' ')}: ${code} ${err}`))));
  });
}

describe('every operation, on ext4', () => {
  let image: string;
  let mnt: string;
  let m: { unmount(): void };

  beforeAll(() => {
    image = freshImage('ext4', 'ops');
    mnt = mountpoint('ops');
    m = mountImage(image, mnt);
  });

  afterAll(() => {
    m.unmount();
    filesystem('ext4').fsck!(image);
  });

  test('chmod, chown, truncate and times to the nanosecond', () => {
    const f = join(mnt, 'attrs');
    fs.writeFileSync(f, 'hello world');
    fs.chmodSync(f, 0o4751);
    fs.chownSync(f, 1234, 5678);
    fs.truncateSync(f, 5);
    host.utimens(f, 1_234_567_890_123_456_789n, 987_654_321_987_654_321n);
    const st = fs.statSync(f, { bigint: true });
    expect(Number(st.mode) & 0o7777).toBe(0o751); // chown drops setuid, as on any Linux filesystem
    expect([st.uid, st.gid]).toEqual([1234n, 5678n]);
    expect(fs.readFileSync(f, 'utf8')).toBe('hello');
    expect(st.atimeNs).toBe(1_234_567_890_123_456_789n);
    expect(st.mtimeNs).toBe(987_654_321_987_654_321n);
  });

  test('links, symlinks, mknod, rename with RENAME_NOREPLACE and RENAME_EXCHANGE', () => {
    fs.writeFileSync(join(mnt, 'one'), '1');
    fs.writeFileSync(join(mnt, 'two'), '2');
    fs.linkSync(join(mnt, 'one'), join(mnt, 'one-again'));
    expect(fs.statSync(join(mnt, 'one')).nlink).toBe(2);
    fs.symlinkSync('one', join(mnt, 'to-one'));
    expect(fs.readlinkSync(join(mnt, 'to-one'))).toBe('one');
    host.mknod(join(mnt, 'null'), fs.constants.S_IFCHR | 0o666, (1 << 8) | 3);
    expect(fs.statSync(join(mnt, 'null')).rdev).toBe((1 << 8) | 3);
    run('mkfifo', [join(mnt, 'fifo')]);
    expect(fs.statSync(join(mnt, 'fifo')).isFIFO()).toBe(true);

    // renameat2 through python's ctypes: 1 is RENAME_NOREPLACE, 2 RENAME_EXCHANGE.
    const renameat2 = (a: string, b: string, flags: number) =>
      run('python3', ['-c', `import ctypes,os,sys
libc = ctypes.CDLL(None, use_errno=True)
r = libc.renameat2(-100, sys.argv[1].encode(), -100, sys.argv[2].encode(), ${flags})
print(0 if r == 0 else os.strerror(ctypes.get_errno()))`, a, b]).trim();
    expect(renameat2(join(mnt, 'one'), join(mnt, 'two'), 1)).toBe('File exists');
    expect(renameat2(join(mnt, 'one'), join(mnt, 'two'), 2)).toBe('0');
    expect(fs.readFileSync(join(mnt, 'one'), 'utf8')).toBe('2');
    expect(fs.readFileSync(join(mnt, 'two'), 'utf8')).toBe('1');
    fs.renameSync(join(mnt, 'two'), join(mnt, 'three'));
    expect(fs.existsSync(join(mnt, 'two'))).toBe(false);
    fs.rmSync(join(mnt, 'three'));
  });

  test('extended attributes', () => {
    const f = join(mnt, 'x');
    fs.writeFileSync(f, '');
    host.setxattr(f, 'user.colour', Buffer.from('blue'));
    host.setxattr(f, 'trusted.secret', Buffer.from('s'));
    expect(host.listxattr(f).sort()).toEqual(['trusted.secret', 'user.colour']);
    expect(host.getxattr(f, 'user.colour').toString()).toBe('blue');
    run('python3', ['-c', 'import os,sys; os.removexattr(sys.argv[1], "user.colour")', f]);
    expect(() => host.getxattr(f, 'user.colour')).toThrow(/ENODATA/);
  });

  test('fallocate, holes with SEEK_DATA and SEEK_HOLE, copy_file_range', () => {
    const f = join(mnt, 'sparse');
    const fd = fs.openSync(f, 'w+');
    fs.writeSync(fd, Buffer.alloc(4096, 7), 0, 4096, 1 << 20);
    expect(host.seek(fd, 0, 3 /* SEEK_DATA */)).toBe(1 << 20);
    expect(host.seek(fd, 1 << 20, 4 /* SEEK_HOLE */)).toBe((1 << 20) + 4096);
    fs.closeSync(fd);
    run('fallocate', ['-o', String(4 << 20), '-l', String(1 << 20), f]);
    expect(fs.statSync(f).size).toBe(5 << 20);
    run('fallocate', ['-p', '-o', String(1 << 20), '-l', '4096', f]);
    expect(fs.readFileSync(f).subarray(1 << 20, (1 << 20) + 4096).every((b) => b === 0)).toBe(true);

    fs.writeFileSync(join(mnt, 'source'), Buffer.alloc(3 << 20, 9));
    run('python3', ['-c', `import os,sys
s = os.open(sys.argv[1], os.O_RDONLY); d = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT, 0o644)
n = 0
while n < 3 << 20: n += os.copy_file_range(s, d, (3 << 20) - n)`, join(mnt, 'source'), join(mnt, 'copy')]);
    expect(fs.readFileSync(join(mnt, 'copy')).equals(fs.readFileSync(join(mnt, 'source')))).toBe(true);
  });

  test('statfs shows the image\'s filesystem', () => {
    const mine = fs.statfsSync(mnt);
    const size = fs.statSync(image).size;
    expect(mine.bsize * mine.blocks).toBeLessThanOrEqual(size);
    expect(mine.bsize * mine.blocks).toBeGreaterThan(size * 0.8);
    expect(mine.files).toBeGreaterThan(1000);
  });

  test('as root, the host reads ahead 4 MiB on the mount, not FUSE\'s 128 KiB', () => {
    fs.writeFileSync(join(mnt, 'ahead'), 'x');
    expect(fs.readFileSync(join(mnt, 'ahead'), 'utf8')).toBe('x'); // an open widens it
    const device = run('mountpoint', ['-d', mnt]).trim();
    expect(fs.readFileSync(`/sys/class/bdi/${device}/read_ahead_kb`, 'utf8').trim()).toBe('4096');
  });

  test('O_DIRECT reads and writes', () => {
    const data = Buffer.alloc(4 << 20);
    for (let i = 0; i < data.length; i += 4096) data.writeUInt32LE(i * 2654435761 >>> 0, i);
    const source = join(work, 'direct-source');
    fs.writeFileSync(source, data);
    const f = join(mnt, 'direct');
    run('dd', [`if=${source}`, `of=${f}`, 'bs=1M', 'oflag=direct', 'status=none']);
    const back = join(work, 'direct-back');
    run('dd', [`if=${f}`, `of=${back}`, 'bs=1M', 'iflag=direct', 'status=none']);
    expect(fs.readFileSync(back).equals(data)).toBe(true);

    // 48 KiB from 8 KiB below ext4's largest file: the kernel writes 8 KiB,
    // which FUSE's direct I/O would have turned into EIO.  The error is the
    // one that stopped the write, and the host takes back what it added.
    const edge = join(mnt, 'direct-edge');
    const largest = (2 ** 32 - 1) * fs.statfsSync(mnt).bsize; // ext4's, with extents
    const dd = spawnSync('dd', ['if=/dev/zero', `of=${edge}`, 'bs=48K', 'count=1', `seek=${largest - 8192}`, 'oflag=direct,seek_bytes', 'conv=notrunc', 'status=none'], { encoding: 'utf8' });
    expect(dd.stderr).toMatch(/File too large/);
    expect(fs.statSync(edge).size).toBe(0);
  });

  test('chattr and lsattr: append-only and immutable flags the kernel enforces', () => {
    const f = join(mnt, 'log');
    fs.writeFileSync(f, 'one\n');
    run('chattr', ['+a', f]);
    expect(run('lsattr', [f]).split(' ')[0]).toMatch(/a/);
    fs.appendFileSync(f, 'two\n');
    expect(() => fs.writeFileSync(f, 'over')).toThrow(/EPERM/);
    run('chattr', ['-a', f]);
    expect(run('lsattr', [f]).split(' ')[0]).not.toMatch(/a/);
    expect(fs.readFileSync(f, 'utf8')).toBe('one\ntwo\n');

    const dir = join(mnt, 'frozen');
    fs.mkdirSync(dir);
    run('chattr', ['+i', dir]);
    expect(() => fs.writeFileSync(join(dir, 'new'), '')).toThrow(/EPERM/);
    run('chattr', ['-i', dir]);
    fs.writeFileSync(join(dir, 'new'), '');
  });

  test('fstrim hands freed blocks back: the image file shrinks', () => {
    const f = join(mnt, 'trimmed');
    const syncAt = (path: string) => {
      const fd = fs.openSync(path, 'r');
      fs.fsyncSync(fd);
      fs.closeSync(fd);
    };
    fs.writeFileSync(f, Buffer.alloc(32 << 20, 1));
    syncAt(f);
    const before = fs.statSync(image).blocks * 512;
    const free = () => Number(fs.statfsSync(mnt).bfree) * Number(fs.statfsSync(mnt).bsize);
    const freeBefore = free();
    fs.unlinkSync(f);
    // The blocks are freed when the server lets go of the file, at the
    // host's FORGET, which comes after the unlink's reply: wait for it.
    expect(waitFor(() => free() - freeBefore >= 30 << 20)).toBe(true);
    syncAt(mnt); // the journal commits: only then are the blocks free to trim
    expect(run('fstrim', ['-v', mnt])).toMatch(/trimmed/);
    expect(before - fs.statSync(image).blocks * 512).toBeGreaterThanOrEqual(30 << 20);
  });

  test('a directory listed while files in it are removed: the rest is all there', () => {
    const dir = join(mnt, 'shrinking');
    fs.mkdirSync(dir);
    for (let i = 0; i < 300; i++) fs.writeFileSync(join(dir, `f${i}`), '');
    // FUSE asks for each entry's attributes with the entry (READDIRPLUS, a
    // page of entries at a time, for as long as the program stats them);
    // two near the end go away after the first is listed.
    const listed = run('python3', [
      '-c',
      `import os,sys
gone = os.listdir(sys.argv[1])[250:252]
names = []
with os.scandir(sys.argv[1]) as it:
    for e in it:
        if not names:
            for g in gone: os.unlink(os.path.join(sys.argv[1], g))
        names.append(e.name)
        e.stat(follow_symlinks=False)  # so FUSE keeps asking for READDIRPLUS
print(len(set(names) - set(gone)))`,
      dir,
    ]);
    expect(Number(listed)).toBe(298);
  });

  test('a shared mapping of a file opened for appending writes in place', () => {
    const f = join(mnt, 'mapped');
    fs.writeFileSync(f, Buffer.alloc(8192, 'a'));
    run('python3', [
      '-c',
      `import mmap,os,sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_APPEND)
m = mmap.mmap(fd, 8192); m[100:105] = b'BBBBB'; m.flush(); m.close(); os.close(fd)`,
      f,
    ]);
    const back = fs.readFileSync(f);
    expect(back.length).toBe(8192);
    expect(back.subarray(100, 105).toString()).toBe('BBBBB');
  });

  test('flock and POSIX locks between programs', async () => {
    const f = join(mnt, 'locked');
    fs.writeFileSync(f, '');
    // One program holds the lock (it says so, then waits for its stdin to
    // close); another is refused, then gets it once it is let go.
    const holder = spawn('flock', ['-x', f, 'sh', '-c', 'echo held; read x'], { stdio: ['pipe', 'pipe', 'ignore'] });
    await new Promise((held) => holder.stdout.once('data', held));
    expect(spawnSync('flock', ['-n', f, 'true']).status).toBe(1);
    const waiter = spawn('flock', ['-w', '60', f, 'true'], { stdio: 'ignore' });
    const waited = new Promise((exited) => waiter.on('exit', exited));
    holder.stdin.end();
    expect(await waited).toBe(0);

    const posix = `import fcntl,sys,time
f = open(sys.argv[1], 'r+')
try:
    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    print('refused'); sys.exit(0)
print('held', flush=True); time.sleep(float(sys.argv[2]))`;
    const posixHolder = spawn('python3', ['-c', posix, f, '60'], { stdio: ['ignore', 'pipe', 'ignore'] });
    return new Promise<void>((done) =>
      posixHolder.stdout.once('data', () => {
        expect(run('python3', ['-c', posix, f, '0']).trim()).toBe('refused');
        posixHolder.kill();
        done();
      }),
    );
  });
});

describe('-o writeback_cache', () => {
  test('the host batches writes; SEEK_DATA and an ACL\'s mode are right before it writes back; the image gets it all', () => {
    const image = freshImage('ext4', 'writeback');
    const mnt = mountpoint('writeback');
    const m = mountImage(image, mnt, 'writeback_cache');
    const data = randomBytes(3 << 20);
    const f = join(mnt, 'batched');
    try {
      const fd = fs.openSync(f, 'w+');
      try {
        for (let at = 0; at < data.length; at += 4096) fs.writeSync(fd, data, at, 4096, (1 << 20) + at);
        // Still in the host's cache: the kernel here has seen none of it,
        // and must not say there is no data.
        expect(host.seek(fd, 0, 3 /* SEEK_DATA */)).toBeLessThanOrEqual(1 << 20);
        expect(host.seek(fd, 1 << 20, 4 /* SEEK_HOLE */)).toBe((1 << 20) + data.length);
        // An ACL's mask is the mode's group bits: shown at once, not in 30 s.
        run('setfacl', ['-m', 'u:1234:rwx', f]);
        expect(fs.statSync(f).mode & 0o070).toBe(0o070);
      } finally {
        fs.closeSync(fd);
      }
      expect(fs.readFileSync(f).subarray(1 << 20).equals(data)).toBe(true);
    } finally {
      m.unmount();
    }
    filesystem('ext4').fsck!(image);
    withLoop(image, (dir) => {
      const back = fs.readFileSync(join(dir, 'batched'));
      expect(back.length).toBe((1 << 20) + data.length);
      expect(back.subarray(1 << 20).equals(data)).toBe(true);
    });
  });
});

describe('as an ordinary user', () => {
  test('a read-only image file mounts with -o ro; writes get EROFS; without ro it is refused', () => {
    const image = freshImage('ext4', 'user-ro');
    const mnt = mountpoint('user-ro');
    fs.chownSync(mnt, NOBODY, NOBODY);
    fs.chownSync(image, NOBODY, NOBODY);
    fs.chmodSync(image, 0o444);

    const refused = cli([image, mnt], { as: NOBODY });
    expect(refused.status).toBe(2);
    expect(refused.stderr).toMatch(/user-ro\.img: the image is read-only here \(EROFS\): mount it with -o ro/);
    expect(mounted(mnt)).toBe(false);

    const r = cli(['-o', 'ro', image, mnt], { as: NOBODY });
    expect(r.stderr).toBe('');
    expectSuccess(r);
    try {
      const as = (cmd: string) =>
        spawnSync('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', 'sh', '-c', cmd], { encoding: 'utf8' });
      expect(as(`ls ${mnt}`).stdout.trim()).toBe('lost+found');
      const write = as(`touch ${mnt}/new`);
      expect(write.status).not.toBe(0);
      expect(write.stderr).toMatch(/Read-only file system/);
    } finally {
      const u = spawnSync('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', 'fusermount3', '-u', mnt], {
        encoding: 'utf8',
      });
      expect(u.stderr).toBe('');
    }
    expect(mounted(mnt)).toBe(false);
  });

  test('allow_other: other users get the host kernel\'s permission checks', () => {
    const image = freshImage('ext4', 'others');
    const mnt = mountpoint('others');
    const m = mountImage(image, mnt, 'allow_other');
    try {
      fs.writeFileSync(join(mnt, 'secret'), 's', { mode: 0o600 });
      fs.writeFileSync(join(mnt, 'open'), 'o', { mode: 0o644 });
      const as = (cmd: string) =>
        spawnSync('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', 'sh', '-c', cmd], { encoding: 'utf8' });
      expect(as(`cat ${mnt}/open`).stdout).toBe('o');
      const denied = as(`cat ${mnt}/secret`);
      expect(denied.status).not.toBe(0);
      expect(denied.stderr).toMatch(/Permission denied/);
      expect(as(`touch ${mnt}/new`).stderr).toMatch(/Permission denied/);
      // A setgid directory gives its group to what is made in it.
      fs.mkdirSync(join(mnt, 'shared'));
      fs.chownSync(join(mnt, 'shared'), 0, 100);
      fs.chmodSync(join(mnt, 'shared'), 0o2777);
      expectSuccess(as(`touch ${mnt}/shared/file && mkdir ${mnt}/shared/dir`));
      for (const made of ['file', 'dir']) {
        const st = fs.statSync(join(mnt, 'shared', made));
        expect([st.uid, st.gid]).toEqual([NOBODY, 100]);
      }
      // A user's setuid program keeps its bit (setgid only with the user's own group).
      expectSuccess(as(`cd ${mnt}/shared && umask 022 && python3 -c "import os; os.close(os.open('suid', os.O_CREAT | os.O_WRONLY, 0o6755))"`));
      expect(fs.statSync(join(mnt, 'shared', 'suid')).mode & 0o7777).toBe(0o4755);
      // A member of the directory's group may give a file the setgid bit, as on any filesystem.
      const member = spawnSync(
        'setpriv',
        [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--groups=100', 'sh', '-c', `umask 022 && python3 -c "import os; os.close(os.open('${mnt}/shared/sgid', os.O_CREAT | os.O_WRONLY, 0o2755))"`],
        { encoding: 'utf8' },
      );
      expectSuccess(member);
      const sgid = fs.statSync(join(mnt, 'shared', 'sgid'));
      expect([sgid.uid, sgid.gid, sgid.mode & 0o7777]).toEqual([NOBODY, 100, 0o2755]);
    } finally {
      m.unmount();
    }
  });

  test('allow_other on vfat, which keeps no owners: others make files and directories', () => {
    const image = freshImage('vfat', 'others-fat');
    const mnt = mountpoint('others-fat');
    const m = mountImage(image, mnt, 'allow_other,umask=000'); // vfat's own option, bare as in fstab
    try {
      const made = spawnSync('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', 'sh', '-c', `touch ${mnt}/file && mkdir ${mnt}/dir`], {
        encoding: 'utf8',
      });
      expect(made.stderr).toBe('');
      expectSuccess(made);
      expect(fs.statSync(join(mnt, 'dir')).isDirectory()).toBe(true);
    } finally {
      m.unmount();
    }
  });

  test('files a user creates are theirs in the image', () => {
    const image = freshImage('ext4', 'user-rw');
    const mnt = mountpoint('user-rw');
    fs.chownSync(mnt, NOBODY, NOBODY);
    fs.chownSync(image, NOBODY, NOBODY);
    const lock = join(work, 'user-rw.lock');
    fs.writeFileSync(lock, '');
    fs.chownSync(lock, NOBODY, NOBODY);
    // dev and suid are root's: said, not silently dropped.
    const mounted = cli(['-o', `lock=${lock},dev,suid`, image, mnt], { as: NOBODY });
    expectSuccess(mounted);
    expect(mounted.stderr).toBe(`lklfuse: ${mnt}: dev and suid need root: mounted nodev,nosuid\n`);
    const as = (cmd: string) => execFileSync('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', 'sh', '-c', cmd]);
    as(`mkdir ${mnt}/mine && echo hi > ${mnt}/mine/file`);
    as(`fusermount3 -u ${mnt}`);
    waitUnlocked(lock);
    filesystem('ext4').fsck!(image);
    withLoop(image, (dir) => {
      const st = fs.statSync(join(dir, 'mine/file'));
      expect([st.uid, st.gid]).toEqual([NOBODY, NOBODY]);
      expect(fs.readFileSync(join(dir, 'mine/file'), 'utf8')).toBe('hi\n');
    });
  });
});

function runOrSay(said: () => string, cmd: string, args: string[]): string {
  try {
    return run(cmd, args);
  } catch (e) {
    throw new Error(`${(e as Error).message}\nthe kernel said:\n${said()}`);
  }
}

describe('permissions', () => {
  test('the caller\'s umask applies, unless a default ACL decides, as on a local filesystem', () => {
    const image = freshImage('ext4', 'umask');
    const mnt = mountpoint('umask');
    const m = mountImage(image, mnt);
    try {
      fs.mkdirSync(join(mnt, 'acl'));
      run('setfacl', ['-d', '-m', 'u::rwx,g::rwx,o::rwx', join(mnt, 'acl')]);
      fs.mkdirSync(join(mnt, 'plain'));
      for (const dir of ['acl', 'plain']) {
        run('sh', ['-c', 'umask 077 && cd "$1" && touch f && mkdir d && mknod p p', 'sh', join(mnt, dir)]);
      }
      const modes = (dir: string) => ['f', 'd', 'p'].map((n) => (fs.statSync(join(dir, n)).mode & 0o777).toString(8));
      expect(modes(join(mnt, 'acl'))).toEqual(['666', '777', '666']);
      expect(modes(join(mnt, 'plain'))).toEqual(['600', '700', '600']);

      // A symlink's own xattrs (getfattr -h, rsync -X): its own, not its target's.
      fs.symlinkSync('plain/f', join(mnt, 'link'));
      expect(run('getfattr', ['-h', '-d', '-m', '-', join(mnt, 'link')])).toBe('');
      run('setfattr', ['-h', '-n', 'trusted.on-link', '-v', 'L', join(mnt, 'link')]);
      expect(run('getfattr', ['-h', '--only-values', '-n', 'trusted.on-link', join(mnt, 'link')])).toBe('L');
      expect(spawnSync('getfattr', ['--only-values', '-n', 'trusted.on-link', join(mnt, 'link')]).status).toBe(1); // the target has none
    } finally {
      m.unmount();
    }
    run('e2fsck', ['-fn', image]);
    withLoop(image, (dir) => {
      expect((fs.statSync(join(dir, 'acl/f')).mode & 0o777).toString(8)).toBe('666');
      expect((fs.statSync(join(dir, 'plain/d')).mode & 0o777).toString(8)).toBe('700');
      expect(run('getfattr', ['-h', '--only-values', '-n', 'trusted.on-link', join(dir, 'link')])).toBe('L');
    });
  });

  test('vfat, which keeps no modes, shows the mounting process\'s umask, as mount(8) run by it would', () => {
    const image = freshImage('vfat', 'fat-umask');
    const mnt = mountpoint('fat-umask');
    const withUmask = (...args: string[]) => run('sh', ['-c', 'umask 027 && exec "$@"', 'sh', process.execPath, lklfuse, ...args]);
    // The fat driver's default: umask= the mounting process's (files keep x: no showexec).
    const modes = () => [mnt, join(mnt, 'd'), join(mnt, 'd/f')].map((p) => (fs.statSync(p).mode & 0o777).toString(8));
    withUmask(image, mnt);
    try {
      fs.mkdirSync(join(mnt, 'd'));
      fs.writeFileSync(join(mnt, 'd/f'), 'x');
      expect(modes()).toEqual(['750', '750', '750']);
    } finally {
      expectSuccess(cli(['-u', mnt]));
    }
    withUmask('-o', 'umask=022', image, mnt); // given: it wins
    try {
      expect(modes()).toEqual(['755', '755', '755']);
    } finally {
      expectSuccess(cli(['-u', mnt]));
    }
  });
});

const countFiles = (dir: string) => Number(run('sh', ['-c', 'find "$1" -type f | wc -l', 'sh', dir]));

/* An empty image file of 1 GiB, made by mkfs (its command and options). */
function gigImage(name: string, mkfs: string[]): string {
  const image = join(work, `${name}.img`);
  fs.rmSync(image, { force: true });
  fs.writeFileSync(image, '');
  fs.truncateSync(image, 1 << 30);
  run(mkfs[0], [...mkfs.slice(1), image]);
  return image;
}

/*
 * Makes d0 ... d<dirs - 1>, 500 files in each, f<m> in d<n> holding
 * "<n>/<m>", in a mount made with log=: should its kernel fail, its last
 * words say why.  As rsync does, if asked: each written under a temporary
 * name, then renamed.
 */
function makeFiles(mnt: string, log: string, dirs: number, { renamed = false } = {}): void {
  const said = () => fs.readFileSync(log, 'utf8').split('\n').slice(-40).join('\n');
  const make = renamed
    ? `        with open(f'{m}/d{d}/.f{f}.tmp', 'w') as out: out.write(f'{d}/{f}')
        os.rename(f'{m}/d{d}/.f{f}.tmp', f'{m}/d{d}/f{f}')`
    : `        with open(f'{m}/d{d}/f{f}', 'w') as out: out.write(f'{d}/{f}')`;
  runOrSay(said, 'python3', [
    '-c',
    `import os,sys
m = sys.argv[1]
for d in range(${dirs}):
    os.mkdir(f'{m}/d{d}')
    for f in range(500):
${make}`,
    mnt,
  ]);
}

describe('big trees', () => {
  // Each inode the host knows was an open file in the kernel: a kernel of
  // 256 MiB ran out of memory at 76 000 files on xfs, and lost what it held.
  test('100 000 files, more than the kernel keeps open: made, found and read; fsck clean; the host counts them all', () => {
    const image = gigImage('big-tree', ['mkfs.xfs', '-q']);
    const mnt = mountpoint('big-tree');
    const log = join(work, 'big-tree.log');
    const m = mountImage(image, mnt, `log=${log}`);
    try {
      makeFiles(mnt, log, 200);
      // Found again after the first are no longer open: each reopened by its handle.
      expect(countFiles(mnt)).toBe(100_000);
      // ls -l: readdirplus, whose reply reopened inodes were once written over.
      expect(run('ls', ['-l', join(mnt, 'd1')]).split('\n').filter((l) => l.startsWith('-')).length).toBe(500);
      expect(fs.readFileSync(join(mnt, 'd0/f0'), 'utf8')).toBe('0/0');
      expect(fs.statSync(join(mnt, 'd0')).nlink).toBe(2);
      fs.renameSync(join(mnt, 'd0/f1'), join(mnt, 'd199/moved'));
    } finally {
      m.unmount();
    }
    run('xfs_repair', ['-n', image]);
    withLoop(image, (dir) => {
      expect(countFiles(dir)).toBe(100_000);
      expect(fs.readFileSync(join(dir, 'd199/moved'), 'utf8')).toBe('0/1');
    });
    fs.rmSync(image);
  });
});

describe('big trees where file handles do not last', () => {
  // FAT's file handles find only inodes the kernel has cached, and exfat
  // gives none: every inode the host knew kept an fd open in the kernel,
  // and a kernel of 32 MiB died at about 23 000 files on exfat.  Now the
  // host is asked to forget the least used ones.
  test.each([
    ['exfat', ['mkfs.exfat', '-c', '4096']],
    ['vfat', ['mkfs.vfat', '-F', '32']],
  ])('%s: 40 000 files with -o mb=32, each made as rsync does; all found and read; fsck clean; the host counts them all', (type, mkfs) => {
    const image = gigImage(`forgotten-${type}`, mkfs);
    const mnt = mountpoint(`forgotten-${type}`);
    const log = join(work, `forgotten-${type}.log`);
    const m = mountImage(image, mnt, `mb=32,log=${log}`);
    try {
      makeFiles(mnt, log, 80, { renamed: true });
      expect(countFiles(mnt)).toBe(40_000);
      expect(fs.readFileSync(join(mnt, 'd0/f0'), 'utf8')).toBe('0/0');
      expect(fs.readFileSync(join(mnt, 'd79/f499'), 'utf8')).toBe('79/499');
    } finally {
      m.unmount();
    }
    filesystem(type).fsck!(image);
    // The host's own reading (this host's kernel may have neither driver).
    const seen = join(work, `seen-forgotten-${type}`);
    fs.mkdirSync(seen);
    filesystem(type).extract!(image, seen);
    expect(countFiles(seen)).toBe(40_000);
    expect(fs.readFileSync(join(seen, 'd79/f499'), 'utf8')).toBe('79/499');
    fs.rmSync(seen, { recursive: true });
    fs.rmSync(image);
  });
});

describe('deleted while in use', () => {
  // lklfuse closes the kernel's fds of the inodes used least, and opens
  // them again by their file handles; a deleted inode's handle finds
  // nothing.  A process in a directory deleted before or after that got
  // ENOENT or EBADF for its xattrs, where a local filesystem has them.
  test('directories a process is still in, deleted before or after lklfuse closed their fds: as on the loop mount', () => {
    const script = `import os, sys
m = sys.argv[1]
made = 0
def evict():
    # More new inodes than lklfuse keeps open with mb=32.
    global made
    d = f'{m}/many{made}'
    made += 1
    os.mkdir(d)
    for n in range(2500):
        os.close(os.open(f'{d}/f{n}', os.O_CREAT | os.O_WRONLY))
def held(name, delete, evict_first):
    os.mkdir(f'{m}/{name}')
    os.setxattr(f'{m}/{name}', 'user.k', name.encode())
    os.chdir(f'{m}/{name}')
    if evict_first: evict()
    delete(f'{m}/{name}')
    if not evict_first: evict()
    try: seen = os.getxattr('.', 'user.k').decode()
    except OSError as e: seen = e.strerror
    try: os.close(os.open('new', os.O_CREAT | os.O_WRONLY)); made_new = 'made'
    except OSError as e: made_new = e.strerror
    os.chdir(m)
    return f'{seen}, {made_new}'
def over(path):
    os.mkdir(f'{m}/other')
    os.rename(f'{m}/other', path)
print('; '.join([held('a', os.rmdir, True), held('b', os.rmdir, False), held('c', over, True)]))`;
    const image = freshImage('ext4', 'deleted-in-use');
    const loop = mountpoint('deleted-in-use-loop');
    run('mount', ['-o', 'loop', image, loop]);
    let expected: string;
    try {
      expected = run('python3', ['-c', script, loop]);
    } finally {
      run('umount', [loop]);
    }
    expect(expected.trim()).toBe('a, No such file or directory; b, No such file or directory; c, No such file or directory');
    const again = freshImage('ext4', 'deleted-in-use');
    const mnt = mountpoint('deleted-in-use');
    const m = mountImage(again, mnt, 'mb=32');
    try {
      expect(run('python3', ['-c', script, mnt])).toBe(expected);
    } finally {
      m.unmount();
    }
    run('e2fsck', ['-fn', again]);
  });
});

describe('starting and stopping', () => {
  test('-o ro mounts an image whose journal still needs replaying, without replaying it, and says so', () => {
    const image = freshImage('ext4', 'journal');
    const copy = join(work, 'journal-copy.img');
    copyNeedingRecovery(image, copy);
    const mnt = mountpoint('journal');
    const r = cli(['-o', 'ro', copy, mnt]);
    expectSuccess(r);
    try {
      expect(r.stderr).toBe(
        `lklfuse: warning: ${copy}: its ext4 journal needs replaying, which a read-only mount cannot do: ` +
          'shown without what the journal holds (the latest changes); mount it read-write, or fsck it, to see them\n',
      );
      expect(fs.readFileSync(join(mnt, 'f'), 'utf8')).toBe('in the image');
    } finally {
      expectSuccess(cli(['-u', mnt]));
    }
    expect(cli(['-q', '-o', 'ro', copy, mnt]).stderr).toBe(''); // -q: not even warnings
    expectSuccess(cli(['-u', mnt]));
  });

  test('log= gets the kernel\'s messages, mount to unmount; -s serves one request at a time', () => {
    const image = freshImage('ext4', 'logged');
    const mnt = mountpoint('logged');
    const log = join(work, 'kernel.log');
    const m = mountImage(image, mnt, `log=${log}`);
    m.unmount();
    const text = fs.readFileSync(log, 'utf8');
    expect(text).toMatch(/EXT4-fs \(vda\): mounted filesystem .* r\/w/);
    expect(text).toMatch(/EXT4-fs \(vda\): unmounting filesystem/);

    // One thread: a reader and a writer at once still both finish.
    expectSuccess(cli(['-s', image, mnt]));
    try {
      run('sh', ['-c', `dd if=/dev/zero of=${mnt}/a bs=1M count=16 status=none & find ${mnt} >/dev/null; wait`]);
      expect(fs.statSync(join(mnt, 'a')).size).toBe(16 << 20);
      expect(fs.readFileSync('/proc/self/mounts', 'utf8')).toContain(`${mnt} fuse.lklfuse`);
    } finally {
      run('fusermount3', ['-u', mnt]);
    }
  });

  test('lock= refuses a second lklfuse with exit 2', () => {
    const image = freshImage('ext4', 'locked');
    const a = mountpoint('locked-a');
    const b = mountpoint('locked-b');
    const m = mountImage(image, a);
    const r = cli(['-o', `lock=${m.lock}`, image, b]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`${m.lock} is locked: another lklfuse serves this image`);
    expect(mounted(b)).toBe(false);
    m.unmount();
  });

  test.each(['gpt', 'dos'])('two partitions of one image (%s), used at once: lklfuse on one, cptofs on the other', (label) => {
    const image = join(work, 'two-parts.img');
    fs.rmSync(image, { force: true });
    fs.writeFileSync(image, '');
    fs.truncateSync(image, 96 << 20);
    // The last partition to the disk's end, as fdisk makes it by default.
    execFileSync('sfdisk', ['-q', image], { input: `label: ${label}\n,40M\n,\n` });
    const parts = JSON.parse(run('sfdisk', ['-J', image])).partitiontable.partitions as { start: number; size: number }[];
    for (const p of parts) run('mkfs.ext4', ['-q', '-F', '-E', `offset=${p.start * 512}`, image, `${(p.size * 512) / 1024}k`]);
    const mnt = mountpoint('two-parts');
    const lock = `${image}.lock`;
    expect(cli(['-o', `part=2,lock=${lock}`, image, mnt]).stderr).toBe('');
    const file = join(work, 'two-parts-file');
    fs.writeFileSync(file, 'into partition 1');
    const cptofs = (part: string) =>
      spawnSync(process.execPath, [join(__dirname, '../../cptofs/bin/cptofs.js'), '-i', image, '-P', part, file, '/'], { encoding: 'utf8', timeout: 60_000 });
    try {
      fs.writeFileSync(join(mnt, 'f'), 'into partition 2');
      const one = cptofs('1');
      expect(one.stderr).toBe('');
      expectSuccess(one);
      const two = cptofs('2');
      expect(two.status).toBe(2);
      expect(two.stderr).toMatch(new RegExp(`two-parts\\.img partition 2: mounted by lklfuse on ${mnt} \\(EBUSY\\)`));
      // A second lklfuse on partition 1: the one named busy is the one that holds it.
      const mnt1 = mountpoint('two-parts-1');
      expect(cli(['-o', 'part=1', image, mnt1]).stderr).toBe('');
      try {
        expect(fs.readFileSync(join(mnt1, 'two-parts-file'), 'utf8')).toBe('into partition 1');
        expect(cptofs('1').stderr).toMatch(new RegExp(`partition 1: mounted by lklfuse on ${mnt1} \\(EBUSY\\)`));
      } finally {
        run('fusermount3', ['-u', mnt1]);
      }
    } finally {
      run('fusermount3', ['-u', mnt]);
      waitUnlocked(lock);
    }
    waitServerGone('two-parts');
    const out = join(work, 'two-parts-out');
    fs.mkdirSync(out, { recursive: true });
    for (const [part, name, text] of [['1', 'two-parts-file', 'into partition 1'], ['2', 'f', 'into partition 2']]) {
      run(process.execPath, [join(__dirname, '../../cptofs/bin/cpfromfs.js'), '-i', image, '-P', part, `/${name}`, join(out, name)]);
      expect(fs.readFileSync(join(out, name), 'utf8')).toBe(text);
    }
    for (const p of parts) {
      const loop = run('losetup', ['-f', '--show', '-o', String(p.start * 512), '--sizelimit', String(p.size * 512), image]).trim();
      try {
        run('e2fsck', ['-fn', loop]);
      } finally {
        run('losetup', ['-d', loop]);
      }
    }
  });

  test('a loop device of a mounted image is refused, named with the mount; and the other way round', () => {
    const image = freshImage('ext4', 'looped');
    const mnt = mountpoint('looped');
    const loop = run('losetup', ['-f', '--show', image]).trim();
    const lock = `${image}.lock`;
    try {
      expect(cli(['-o', `lock=${lock}`, image, mnt]).stderr).toBe('');
      try {
        const cptofs = spawnSync(process.execPath, [join(__dirname, '../../cptofs/bin/cptofs.js'), '-i', loop, '/etc/hostname', '/'], { encoding: 'utf8', timeout: 60_000 });
        expect(cptofs.status).toBe(2);
        expect(cptofs.stderr).toContain(`${loop} (a loop device of ${image}): mounted by lklfuse on ${mnt} (EBUSY)`);
      } finally {
        run('fusermount3', ['-u', mnt]);
        waitUnlocked(lock);
      }
      // lklfuse on the device: the file is locked too, while it serves.
      expect(cli(['-o', `lock=${lock}`, loop, mnt]).stderr).toBe('');
      try {
        const cptofs = spawnSync(process.execPath, [join(__dirname, '../../cptofs/bin/cptofs.js'), '-i', image, '/etc/hostname', '/'], { encoding: 'utf8', timeout: 60_000 });
        expect(cptofs.status).toBe(2);
        expect(cptofs.stderr).toContain(`${image}: mounted by lklfuse on ${mnt} (EBUSY)`);
      } finally {
        run('fusermount3', ['-u', mnt]);
        waitUnlocked(lock);
      }
    } finally {
      run('losetup', ['-d', loop]);
    }
    run('e2fsck', ['-fn', image]);
  });

  test('lklfuse on a loop device of one partition leaves the image\'s other partition free', () => {
    const image = join(work, 'loop-parts.img');
    fs.writeFileSync(image, '');
    fs.truncateSync(image, 64 << 20);
    run('sfdisk', ['-q', image], { input: 'label: dos\nsize=24MiB\nsize=24MiB\n' });
    const parts = JSON.parse(run('sfdisk', ['-J', image])).partitiontable.partitions as { start: number; size: number }[];
    for (const p of parts) run('mkfs.ext4', ['-q', '-F', '-E', `offset=${p.start * 512}`, image, `${(p.size * 512) / 1024}k`]);
    const [start, size] = [parts[0].start * 512, parts[0].size * 512];
    const loop = run('losetup', ['-f', '--show', '-o', String(start), '--sizelimit', String(size), image]).trim();
    const mnt = mountpoint('loop-parts');
    try {
      expect(cli([loop, mnt]).stderr).toBe('');
      try {
        fs.writeFileSync(join(mnt, 'on-1'), 'one');
        const cptofs = (part: string) =>
          spawnSync(process.execPath, [join(__dirname, '../../cptofs/bin/cptofs.js'), '-i', image, '-P', part, '/etc/hostname', '/'], { encoding: 'utf8', timeout: 60_000 });
        const two = cptofs('2');
        expect(two.stderr).toBe('');
        expectSuccess(two);
        expect(cptofs('1').stderr).toContain(`partition 1: mounted by lklfuse on ${mnt} (EBUSY)`);
      } finally {
        run('fusermount3', ['-u', mnt]);
      }
    } finally {
      waitServerGone(mnt);
      run('losetup', ['-d', loop]);
    }
  });

  test('an image the host has mounted (a loop device) is refused for writing, named with its mount', () => {
    const image = freshImage('ext4', 'host-mounted');
    const mnt = mountpoint('host-mounted');
    withLoop(image, (dir) => {
      const r = cli([image, mnt]);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(new RegExp(`host-mounted\\.img: mounted by the host on ${dir} \\(/dev/loop\\d+; EBUSY\\)`));
      const cptofs = spawnSync(process.execPath, [join(__dirname, '../../cptofs/bin/cptofs.js'), '-i', image, '/etc/hostname', '/'], { encoding: 'utf8' });
      expect(cptofs.status).toBe(2);
      expect(cptofs.stderr).toMatch(/mounted by the host on/);
      // Reading is left alone, as e2fsck -n and debugfs do.
      expectSuccess(cli(['-o', 'ro', image, mnt]));
      run('fusermount3', ['-u', mnt]);
    });
  });

  test('a mount point given through a symlink: mounted on the directory it names', () => {
    const image = freshImage('ext4', 'via-symlink');
    const dir = mountpoint('via-symlink');
    const link = join(work, 'via-symlink-link');
    fs.rmSync(link, { force: true });
    fs.symlinkSync(dir, link);
    const r = cli([image, link]);
    expect(r.stderr).toBe('');
    expectSuccess(r);
    try {
      expect(mounted(dir)).toBe(true);
      expect(fs.readdirSync(link)).toContain('lost+found');
    } finally {
      run('fusermount3', ['-u', dir]);
    }
  });

  test('an image path with a comma and a backslash: the mount is named by it exactly', () => {
    const dir = join(work, 'odd,dir\\x');
    fs.mkdirSync(dir, { recursive: true });
    const image = join(dir, 'a,b.img');
    fs.copyFileSync(freshImage('ext4', 'odd-source'), image);
    const mnt = mountpoint('odd');
    expectSuccess(cli([image, mnt]));
    try {
      const line = fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').find((l) => l.split(' ')[1] === mnt)!;
      expect(line.split(' ')[0]).toBe(image.replace(/\\/g, '\\134'));
      // And other tools find it there: refused at once.
      const busy = spawnSync(process.execPath, [join(__dirname, '../../fs2tar/bin/fs2tar.js'), image, join(work, 'odd.tar')], { encoding: 'utf8', timeout: 60_000 });
      expect(busy.stderr).toMatch(/mounted by lklfuse on/);
    } finally {
      run('fusermount3', ['-u', mnt]);
    }
  });

  test('the image is the mount\'s alone; right after fusermount3 -u, another tool sees everything', () => {
    const image = freshImage('ext4', 'handover');
    const mnt = mountpoint('handover');
    expectSuccess(cli([image, mnt]));
    run('dd', ['if=/dev/urandom', `of=${mnt}/data`, 'bs=1M', 'count=32']);
    const sum = run('sha256sum', [join(mnt, 'data')]).split(' ')[0];
    // Named by another path, a symlink, it is the same image: refused at once.
    const alias = join(work, 'handover-alias.img');
    fs.symlinkSync(image, alias);
    const busy = spawnSync(process.execPath, [join(__dirname, '../../fs2tar/bin/fs2tar.js'), alias, join(work, 'x.tar')], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(busy.status).toBe(2);
    expect(busy.stderr).toMatch(new RegExp(`handover-alias\\.img: mounted by lklfuse on ${mnt} \\(EBUSY\\)`));

    run('fusermount3', ['-u', mnt]);
    const out = join(work, 'handover-out');
    fs.mkdirSync(out);
    run(process.execPath, [join(__dirname, '../../cptofs/bin/cpfromfs.js'), '-i', image, '/data', out]);
    expect(run('sha256sum', [join(out, 'data')]).split(' ')[0]).toBe(sum);
    filesystem('ext4').fsck!(image);
  });

  test('bad input: a clear message naming the path, exit 2', () => {
    const mnt = mountpoint('bad');
    const missing = cli([join(work, 'missing.img'), mnt]);
    expect(missing.status).toBe(2);
    expect(missing.stderr).toMatch(/missing\.img: no such file \(ENOENT\)/);

    const junk = join(work, 'junk.img');
    fs.writeFileSync(junk, Buffer.alloc(1 << 20, 0x5a));
    const r = cli([junk, mnt]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/junk\.img: no filesystem the kernel knows/);
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace

    const wrongType = cli(['-o', 'type=xfs', freshImage('ext4', 'wrong-type'), mnt]);
    expect(wrongType.status).toBe(2);
    expect(wrongType.stderr).toMatch(/wrong-type\.img: cannot mount as xfs: EINVAL \(invalid argument\); the kernel said: XFS/);

    const noDir = cli([junk, join(work, 'no-such-dir')]);
    expect(noDir.status).toBe(2);
    expect(noDir.stderr).toMatch(/no-such-dir: no such directory/);

    // A signature found names the type: its failure is the one told.
    const badOption = cli(['-o', 'opts=bogus_opt', freshImage('ext4', 'bad-option'), mnt]);
    expect(badOption.status).toBe(2);
    expect(badOption.stderr).toMatch(/bad-option\.img: cannot mount as ext4 \(its signature\): EINVAL .*Unknown parameter 'bogus_opt'/);
    expect(badOption.stderr).not.toMatch(/squashfs|no filesystem/);

    const unknownType = cli(['-o', 'type=nosuchfs', freshImage('ext4', 'unknown-type'), mnt]);
    expect(unknownType.status).toBe(2);
    expect(unknownType.stderr).toMatch(/unknown-type\.img: unknown filesystem type 'nosuchfs' \(the kernel has .*btrfs/);

    const partitioned = join(work, 'partitioned.img');
    fs.writeFileSync(partitioned, '');
    fs.truncateSync(partitioned, 64 << 20);
    execFileSync('sfdisk', ['-q', partitioned], { input: 'label: gpt\n,30M\n,\n' });
    const whole = cli([partitioned, mnt]);
    expect(whole.status).toBe(2);
    expect(whole.stderr).toMatch(/partitioned\.img: a partitioned disk \(partitions 1, 2\): name the partition to mount .*-o part=N/);
    const noPart = cli(['-o', 'part=3', partitioned, mnt]);
    expect(noPart.stderr).toMatch(/^lklfuse: .*partitioned\.img: no partition 3 \(ENODEV; its partitions: 1, 2\)\n$/);

    const noLockDir = cli(['-o', `lock=${join(work, 'no-dir', 'x.lock')}`, junk, mnt]);
    expect(noLockDir.status).toBe(2);
    expect(noLockDir.stderr).toMatch(/no-dir\/x\.lock: cannot open the lock file: no such file or directory \(ENOENT\)/);
    expect(cli(['-o', 'lock=', junk, mnt]).stderr).toMatch(/-o lock= needs a file/);

    const tiny = cli(['-o', 'mb=8', junk, mnt]);
    expect(tiny.status).toBe(2);
    expect(tiny.stderr).toMatch(/mb=8: the kernel needs at least 32/);
    expect(mounted(mnt)).toBe(false);
  });

  test('mount(8) mounts it as an fstab line would, through mount.fuse3, with fstab\'s words', () => {
    const image = freshImage('ext4', 'by-mount');
    const mnt = mountpoint('by-mount');
    // PROGRAM#SOURCE: mount.fuse3 runs the program by its path (mount(8) clears PATH).
    run('mount', ['-t', 'fuse', `${join(__dirname, '../../../bin/lklfuse')}#${image}`, mnt, '-o', 'noatime,nofail,_netdev,x-systemd.automount,errors=remount-ro']);
    try {
      const line = fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').find((l) => l.split(' ')[1] === mnt)!;
      expect(line.split(' ').slice(0, 3)).toEqual([image, mnt, 'fuse.lklfuse']);
      fs.writeFileSync(join(mnt, 'f'), 'by mount(8)');
    } finally {
      run('umount', [mnt]);
    }
    waitServerGone('by-mount');
    filesystem('ext4').fsck!(image);
    withLoop(image, (dir) => expect(fs.readFileSync(join(dir, 'f'), 'utf8')).toBe('by mount(8)'));
  });

  test('-o words are sorted as mount(8) sorts them, the later of two flags winning', () => {
    const o = parseMountOptions(['sync,nosuid,fsname=x,user,user=me,noauto,x-systemd.automount,comment=c', 'async,nosymfollow,errors=remount-ro,defaults']);
    expect(o.fuseOptions).toEqual(['sync', 'nosuid', 'fsname=x', 'user=me', 'async']);
    expect(o.options).toBe('sync,async,nosymfollow,errors=remount-ro');
    expect(splitMountOptions(o.options)).toEqual({ flags: C.MS_NOSYMFOLLOW, data: 'errors=remount-ro' });
  });

  test('-o max_read= mounts with the reads it asks for; FUSE options lklfuse does not use are refused, named', () => {
    const image = freshImage('ext4', 'max-read');
    const mnt = mountpoint('max-read');
    for (const size of ['4096', '1048576']) {
      const m = mountImage(image, mnt, `max_read=${size}`);
      try {
        const data = randomBytes(3 << 20);
        fs.writeFileSync(join(mnt, 'f'), data);
        expect(fs.readFileSync(join(mnt, 'f')).equals(data)).toBe(true);
      } finally {
        m.unmount();
      }
    }
    for (const [option, why] of [
      ['kernel_cache', /high-level API/],
      ['blksize=4096', /fuseblk/],
      ['max_read=2097152', /at most 1048576/],
      ['max_read=0', /at least 4096/],
      ['uid=4294967296', /at most 4294967294/],
    ] as const) {
      const r = cli(['-o', option, image, mnt]);
      expect([option, r.status]).toEqual([option, 2]);
      expect(r.stderr).toMatch(why);
      expect(mounted(mnt)).toBe(false);
    }
  });

  test('mount(8)\'s options: atime flags and the filesystem\'s own go to the kernel, fstab\'s are ignored', () => {
    const image = freshImage('ext4', 'flags');
    const mnt = mountpoint('flags');
    const file = join(mnt, 'f');
    const lock = `${image}.lock`;
    const withOptions = (options: string, body: () => void) => {
      expect(cli(['-o', `lock=${lock}${options ? `,${options}` : ''}`, image, mnt]).stderr).toBe('');
      try {
        body();
      } finally {
        run('fusermount3', ['-u', mnt]);
        waitUnlocked(lock);
      }
    };
    const future = '2030-01-01 00:00:00';
    const readAtime = () => {
      const out = run('debugfs', ['-R', 'stat /f', image]);
      return /atime: 0x[0-9a-f]+:[0-9a-f]+ -- (.*)/.exec(out)![1];
    };
    withOptions('defaults,nofail,_netdev,x-systemd.automount,comment=x,errors=remount-ro,nosuid', () => {
      fs.writeFileSync(file, 'data');
      run('touch', ['-a', '-d', future, file]);
    });
    // noatime: a read leaves the atime as it was.
    withOptions('noatime', () => expect(fs.readFileSync(file, 'utf8')).toBe('data'));
    expect(readAtime()).toMatch(/2030/);
    // strictatime: a read sets it, though it is after the mtime.
    withOptions('strictatime', () => expect(fs.readFileSync(file, 'utf8')).toBe('data'));
    expect(readAtime()).not.toMatch(/2030/);
    // As root, dev and suid are had as asked (fusermount3 alone would not), the rest kept.
    const flagsOf = () => fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').find((l) => l.split(' ')[1] === mnt)!.split(' ')[3];
    withOptions('dev,suid,noexec', () => expect(flagsOf()).toMatch(/^rw,noexec,relatime,/));
    withOptions('', () => expect(flagsOf()).toMatch(/^rw,nosuid,nodev,relatime,/));
    filesystem('ext4').fsck!(image);
  });

  test('Ctrl-C while lklfuse starts, at any moment: 130 and nothing left, or 0 once mounted and unmounted', async () => {
    const image = freshImage('ext4', 'early-int');
    const mnt = mountpoint('early-int');
    const lock = `${image}.lock`;
    // Timed from the moment the server's kernel process is there: the first
    // land while it boots (its client gone then, it once waited for it for
    // ever, holding the image), later ones as the mount gets ready (a
    // signal there was once dropped, and the mount stayed).
    const kernelOf = (pid: number) => childrenOf(pid).some((server) => childrenOf(server.pid).some((c) => c.comm === 'lkl-um-kernel'));
    for (let delay = 0; delay < 40; delay += 3) {
      const fg = spawn(process.execPath, [lklfuse, '-f', '-o', `lock=${lock}`, image, mnt], { stdio: ['ignore', 'ignore', 'pipe'] });
      let said = '';
      fg.stderr.on('data', (d: Buffer) => (said += d.toString()));
      const exited = new Promise<number | null>((done) => fg.once('exit', done));
      while (fg.exitCode === null && !kernelOf(fg.pid!)) await new Promise((r) => setImmediate(r));
      await new Promise((r) => setTimeout(r, delay));
      fg.kill('SIGINT');
      let timer: NodeJS.Timeout | undefined;
      const status = await Promise.race([exited, new Promise<string>((late) => (timer = setTimeout(() => late('still running'), 30_000)))]);
      clearTimeout(timer);
      if (status === 'still running') fg.kill('SIGKILL');
      const outcome = status === 0 ? [0, /; Ctrl-C unmounts\n$/.test(said)] : [status, said];
      expect([delay, ...outcome]).toEqual(status === 0 ? [delay, 0, true] : [delay, 130, '']);
      waitUnlocked(lock, 30); // the kernel process has exited
      expect([delay, waitFor(() => !mounted(mnt))]).toEqual([delay, true]);
    }
    filesystem('ext4').fsck!(image);
  });

  test('SIGTERM to a foreground lklfuse while a program writes: unmounted, synced, clean', async () => {
    const image = freshImage('ext4', 'sigterm');
    const mnt = mountpoint('sigterm');
    const lock = `${image}.lock`;
    const fg = spawn(process.execPath, [lklfuse, '-f', '-o', `lock=${lock}`, image, mnt], { stdio: ['ignore', 'ignore', 'pipe'] });
    await new Promise<void>((ready) => fg.stderr.once('data', () => ready())); // "... on MOUNTPOINT"
    expect(mounted(mnt)).toBe(true);
    fs.writeFileSync(join(mnt, 'before'), 'written before');
    // Small synchronous writes: still writing when the signal comes.
    // (At most 128 MiB, more than the image holds: should the signal come
    // late, dd stops at ENOSPC, not on the host's disk under the mount point.)
    const writer = spawn('dd', ['if=/dev/zero', `of=${mnt}/big`, 'bs=64k', 'count=2048', 'oflag=dsync'], { stdio: 'ignore' });
    const written = new Promise((done) => writer.once('exit', done));
    expect(waitFor(() => fs.existsSync(join(mnt, 'big')) && fs.statSync(join(mnt, 'big')).size > 0)).toBe(true);
    fg.kill('SIGTERM');
    const status = await new Promise<number | null>((done) => fg.once('exit', done));
    expect(status).toBe(0);
    await written;
    waitUnlocked(lock);
    expect(mounted(mnt)).toBe(false);
    filesystem('ext4').fsck!(image);
    withLoop(image, (dir) => expect(fs.readFileSync(join(dir, 'before'), 'utf8')).toBe('written before'));
  });

  test('in the foreground, the kernel\'s own words about a corrupt image come on stderr', async () => {
    const image = freshImage('ext4', 'corrupt');
    run('debugfs', ['-w', '-R', 'mkdir dir', image]);
    for (let i = 0; i < 8; i++) run('debugfs', ['-w', '-R', `write /dev/null dir/f${i}`, image]);
    // The inode table block holding dir/f5: zeroed, checksums and all.
    const imap = run('debugfs', ['-R', 'imap dir/f5', image]);
    const block = Number(/located at block (\d+)/.exec(imap)![1]);
    const blockSize = Number(/Block size:\s+(\d+)/.exec(run('dumpe2fs', ['-h', image]))![1]);
    run('dd', ['if=/dev/zero', `of=${image}`, `bs=${blockSize}`, `seek=${block}`, 'count=1', 'conv=notrunc', 'status=none']);
    const mnt = mountpoint('corrupt');
    const lock = `${image}.lock`;
    const fg = spawn(process.execPath, [lklfuse, '-f', '-o', `lock=${lock}`, image, mnt], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    fg.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    await new Promise<void>((ready) => fg.stderr.once('data', () => ready())); // "... on MOUNTPOINT"
    const ls = spawnSync('ls', ['-l', join(mnt, 'dir')], { encoding: 'utf8' });
    expect(ls.stderr).toMatch(/Bad message|Structure needs cleaning|Input\/output error/);
    await new Promise((r) => setTimeout(r, 500)); // the relay's next look
    fg.kill('SIGTERM');
    expect(await new Promise<number | null>((done) => fg.once('exit', done))).toBe(0);
    expect(stderr).toMatch(/EXT4-fs error \(device vda\).*checksum invalid/);
    expect(stderr).not.toMatch(/Power down|initial console/);
    waitUnlocked(lock);
  });

  test('SIGKILL of the server: the kernel syncs and exits, the mount point is released', () => {
    const image = freshImage('ext4', 'sigkill');
    const mnt = mountpoint('sigkill');
    const m = mountImage(image, mnt);
    run('dd', ['if=/dev/urandom', `of=${mnt}/data`, 'bs=1M', 'count=16']);
    const sum = run('sha256sum', [join(mnt, 'data')]).split(' ')[0];
    const server = run('pgrep', ['-f', `lklfuse-server.*${mnt}`]).trim();
    process.kill(Number(server), 'SIGKILL');
    waitUnlocked(m.lock);
    expect(waitFor(() => !mounted(mnt))).toBe(true);
    filesystem('ext4').fsck!(image);
    withLoop(image, (dir) => expect(run('sha256sum', [join(dir, 'data')]).split(' ')[0]).toBe(sum));
  });

  test('writes the host refused (its filesystem full) are told at unmount, exit status 2', async () => {
    await withImageOnFullHost(join(work, 'host-full'), async (image) => {
      const mnt = mountpoint('host-full');
      const fg = spawn(process.execPath, [lklfuse, '-f', image, mnt], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      fg.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      await new Promise<void>((ready) => fg.stderr.once('data', () => ready()));
      fs.writeFileSync(join(mnt, 'forty-mib'), Buffer.alloc(40 << 20, 7)); // into the kernel's cache
      run('fusermount3', ['-u', mnt]);
      expect(await new Promise<number | null>((done) => fg.once('exit', done))).toBe(2);
      expect(stderr).toContain(`lklfuse: ${image}: what was written may not all be in the image: Input/output error`);
      expect(stderr).not.toContain('the server stopped'); // it said why itself
    });
  });

  test.each([
    ['ext4', 'shuts itself down', /Remounting filesystem read-only/, 'the filesystem shut itself down after an error'],
    ['vfat', 'goes read-only', /Filesystem has been set read-only/, 'the filesystem went read-only after an error'],
  ] as const)('%s %s after an error, losing what it held: told at unmount, exit 2', async (type, _, kernelSaid, why) => {
    const image = join(work, `damaged.${type}`);
    imageWithDamagedDirectory(image, type);
    const mnt = mountpoint(`damaged-${type}`);
    const fg = spawn(process.execPath, [lklfuse, '-f', image, mnt], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    fg.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    await new Promise<void>((ready) => fg.stderr.once('data', () => ready()));
    fs.writeFileSync(join(mnt, 'first'), Buffer.alloc(5 << 20, 3)); // into the kernel's cache
    expect(() => fs.readdirSync(join(mnt, 'damaged'))).toThrow(/EIO|error -74/); // EBADMSG: node has no name for it
    run('fusermount3', ['-u', mnt]);
    expect(await new Promise<number | null>((done) => fg.once('exit', done))).toBe(2);
    expect(stderr).toMatch(kernelSaid); // the kernel's words, in the foreground
    expect(stderr).toContain(`lklfuse: ${image}: ${why}: what was written may not all be in the image\n`);
  });

  test.each(['squashfs', 'iso9660'])('%s: an image mounts without -o ro, read-only (as mount(8) has it), and unmounts clean', async (type) => {
    const src = join(work, `${type}-src`);
    fs.mkdirSync(src, { recursive: true });
    fs.writeFileSync(join(src, 'file'), 'made from a tree');
    const image = join(work, `plain.${type}`);
    filesystem(type).make(image, src);
    const mnt = mountpoint(`${type}-rw`);
    const fg = spawn(process.execPath, [lklfuse, '-f', image, mnt], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    fg.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    await new Promise<void>((ready) => fg.stderr.once('data', () => ready()));
    expect(fs.readFileSync(join(mnt, 'file'), 'utf8')).toBe('made from a tree');
    expect(() => fs.writeFileSync(join(mnt, 'new'), 'x')).toThrow(/EROFS/);
    const line = fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').find((l) => l.split(' ')[1] === mnt);
    expect(line?.split(' ')[3].split(',')).toContain('ro'); // the host's mount says so too
    run('fusermount3', ['-u', mnt]);
    expect(await new Promise<number | null>((done) => fg.once('exit', done))).toBe(0);
    expect(stderr).not.toMatch(/may not all be in the image/);

    // Asked for read-write, as mount -w: read-write or nothing.
    const r = cli(['-o', 'rw', image, mnt]);
    expect(r.status).toBe(2);
    expect(r.stderr).toBe(`lklfuse: ${image}: the kernel mounts ${type} only read-only (EROFS): mount it without -o rw\n`);
    expect(mounted(mnt)).toBe(false);
  });

  test('lklfuse -u returns once the image is synced: fsck clean and whole at once, as the host sees it', () => {
    const image = join(work, 'unmount-wait.img');
    fs.writeFileSync(image, '');
    fs.truncateSync(image, 512 << 20);
    run('mkfs.ext4', ['-q', '-F', image]);
    const mnt = mountpoint('unmount-wait');
    expectSuccess(cli(['-o', 'mb=1024', image, mnt])); // room for much unwritten
    const data = randomBytes(200 << 20);
    fs.writeFileSync(join(mnt, 'big'), data);
    run('cp', ['-a', tree, join(mnt, 'tree')]);
    const r = cli(['-u', mnt]);
    expect(r.stderr).toBe('');
    expectSuccess(r);
    expect(mounted(mnt)).toBe(false);
    filesystem('ext4').fsck!(image); // no journal left to replay, nothing missing
    withLoop(image, (dir) => {
      expect(fs.readFileSync(join(dir, 'big')).equals(data)).toBe(true);
      expect(survey(join(dir, 'tree'))).toEqual(survey(tree));
    });
    const notOurs = cli(['-u', work]);
    expect(notOurs.status).toBe(2);
    expect(notOurs.stderr).toBe(`lklfuse: ${work}: not an lklfuse mount\n`);

    // A server that does not answer (stopped) neither hangs lklfuse -u nor
    // passes for synced: unmounted, exit 1 at the timeout.
    const m = mountImage(image, mnt);
    const server = Number(run('pgrep', ['-f', `lklfuse-server.*${mnt}`]).trim());
    process.kill(server, 'SIGSTOP');
    try {
      const stuck = cli(['-u', '--timeout', '1', mnt]);
      expect(stuck.status).toBe(1);
      expect(stuck.stderr).toBe(`lklfuse: ${mnt}: unmounted, but its server is still syncing the image after 1 s\n`);
      expect(mounted(mnt)).toBe(false);
    } finally {
      process.kill(server, 'SIGCONT');
    }
    waitUnlocked(m.lock);

    // A server whose kernel died (killed here) has lost what it was given
    // since: lklfuse -u says so, not "synced".
    const again = mountImage(image, mnt);
    fs.writeFileSync(join(mnt, 'after'), 'x');
    const serverNow = run('pgrep', ['-f', `lklfuse-server.*${mnt}`]).trim();
    process.kill(Number(run('pgrep', ['-P', serverNow, '-x', 'lkl-um-kernel']).trim()), 'SIGKILL');
    const died = cli(['-u', mnt]);
    expect(died.stderr).toBe(
      `lklfuse: ${mnt}: unmounted, but its kernel had died before: what was written to it may not be in the image (its log= has the kernel's last words)\n`,
    );
    expect(died.status).toBe(1);
    expect(mounted(mnt)).toBe(false);
    waitUnlocked(again.lock);
  });

  /* lklfuse -f on a fresh ext4 image, once it has said it is mounted; what it says after. */
  async function foreground(name: string) {
    const image = freshImage('ext4', name);
    const mnt = mountpoint(name);
    const fg = spawn(process.execPath, [lklfuse, '-f', image, mnt], { stdio: ['ignore', 'ignore', 'pipe'] });
    const said = { stderr: '' };
    fg.stderr.on('data', (d: Buffer) => (said.stderr += d.toString()));
    await new Promise<void>((ready) => fg.stderr.once('data', () => ready()));
    return { fg, mnt, said };
  }

  test('in the foreground, a killed server is told: exit 2 and why', async () => {
    const { fg, mnt, said } = await foreground('fg-kill');
    process.kill(Number(run('pgrep', ['-f', `lklfuse-server.*${mnt}`]).trim()), 'SIGKILL');
    expect(await new Promise<number | null>((done) => fg.once('exit', done))).toBe(2);
    expect(said.stderr).toMatch(/lklfuse: the server was killed by SIGKILL; its kernel syncs the image\n$/);
    expect(waitFor(() => !mounted(mnt))).toBe(true);
  });

  test('in the foreground, a killed kernel is told: the next call fails with ESHUTDOWN, and lklfuse unmounts, exit 2', async () => {
    const { fg, mnt, said } = await foreground('fg-kernel-kill');
    const server = run('pgrep', ['-f', `lklfuse-server.*${mnt}`]).trim();
    process.kill(Number(run('pgrep', ['-P', server, 'lkl-um-kernel']).trim()), 'SIGKILL');
    expect(() => fs.readdirSync(mnt)).toThrow(/ESHUTDOWN/);
    const exited = new Promise<number | null>((done) => fg.once('exit', done));
    let timer: NodeJS.Timeout | undefined;
    const status = await Promise.race([exited, new Promise<string>((late) => (timer = setTimeout(() => late('still serving'), 20_000)))]);
    clearTimeout(timer);
    if (status === 'still serving') spawnSync('fusermount3', ['-u', mnt]);
    expect(status).toBe(2);
    expect(said.stderr).toMatch(/the kernel did not power off cleanly: its process was killed by SIGKILL\n$/);
    expect(waitFor(() => !mounted(mnt))).toBe(true);
  });
});
