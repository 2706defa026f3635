// fs2tar, run as the command it is: images holding the metadata tree are
// exported, the archives extracted by GNU tar, and every entry compared with
// what the host sees in the image (a loop mount, or the filesystem's own
// tool where the host kernel lacks the driver).
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { join } from 'node:path';
import { Excluder, host, Kernel, Reporter } from '@lkl-um/core';
import { pack as tarPack } from 'tar-stream';
import { TarExporter, useOwnHeaders } from '../src/export';
import { expectSuccess, FILESYSTEMS, imageWithDamagedDirectory, isRoot, run, runInterrupted, tempDir } from '../../core/__tests__/helpers/images';
import { byteNames, makeByteNames, makeTree, survey, withLoop } from '../../core/__tests__/helpers/tree';

jest.setTimeout(300_000);

const fs2tar = join(__dirname, '../bin/fs2tar.js');
const cptofs = join(__dirname, '../../cptofs/bin/cptofs.js');

function cli(args: string[], opts: { input?: string } = {}) {
  const r = spawnSync(process.execPath, [fs2tar, ...args], { encoding: 'utf8', input: opts.input });
  return r;
}

function untar(archive: string, dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  run('tar', ['--xattrs', "--xattrs-include=*", '--sparse', '--numeric-owner', '-xpf', archive, '-C', dir]);
}

let work: string;
let tree: string;

beforeAll(() => {
  if (!isRoot()) throw new Error('these tests make device nodes and loop mounts: run them as root');
  work = tempDir();
  tree = makeTree(work);
  fs.unlinkSync(join(tree, 'socket')); // tar skips sockets; tested apart
});

afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

/* An image of each kind, holding the tree (what of it the filesystem can). */
function imageWithTree(type: string): string {
  const f = FILESYSTEMS.find((x) => x.type === type)!;
  const image = join(work, `${type}.img`);
  fs.rmSync(image, { force: true });
  if (f.readOnly) {
    f.make(image, join(work)); // the image's root holds tree/
  } else {
    f.make(image);
    const r = spawnSync(process.execPath, [cptofs, '-q', '-i', image, tree, '/'], { encoding: 'utf8' });
    if (r.status !== 0 && type !== 'vfat') throw new Error(r.stderr);
  }
  return image;
}

describe.each(['ext4', 'btrfs', 'xfs', 'squashfs'])('%s', (type) => {
  test('the archive, extracted by GNU tar, is what the host sees in the image', () => {
    const image = imageWithTree(type);
    const archive = join(work, `${type}.tar`);
    const r = cli([image, archive]);
    expect(r.stderr).toBe('');
    expectSuccess(r);
    const out = join(work, `x-${type}`);
    untar(archive, out);
    const inImage = withLoop(image, (mnt) => survey(join(mnt, 'tree')));
    expect(survey(join(out, 'tree'))).toEqual(inImage);
    fs.rmSync(out, { recursive: true });
  });
});

describe.each(['vfat', 'iso9660'])('%s', (type) => {
  test('the archive, extracted by GNU tar, is what the filesystem\'s own tool sees', () => {
    const image = imageWithTree(type);
    const archive = join(work, `${type}.tar`);
    const r = cli([image, archive]);
    expectSuccess(r);
    const out = join(work, `x-${type}`);
    untar(archive, out);
    const host = join(work, `h-${type}`);
    fs.mkdirSync(host);
    FILESYSTEMS.find((x) => x.type === type)!.extract!(image, host);
    // Their tools give what the filesystem keeps: names and contents.  Not
    // all of it: mtools mangles names beyond Unicode's first plane, xorriso
    // extracts no device files, and Linux's isofs (ours, and the host's)
    // shows a Rock Ridge name no longer than its first continuation.
    const comparable = (k: string, v: { type: number }) =>
      !/[\u{10000}-\u{10ffff}]/u.test(k) && !/_{2}$/.test(k) && k.length < 100 && v.type !== 0o020000 && v.type !== 0o060000;
    const contents = (s: ReturnType<typeof survey>) =>
      Object.fromEntries(
        Object.entries(s.entries)
          .filter(([k, v]) => comparable(k, v))
          .map(([k, v]) => [k, v.content ?? v.link ?? v.type]),
      );
    expect(contents(survey(join(out, 'tree')))).toEqual(contents(survey(join(host, 'tree'))));
    fs.rmSync(out, { recursive: true });
    fs.rmSync(host, { recursive: true });
  });
});

test('iso9660: a directory of 10 000 entries through a 1 MiB window, each looked at for its type: no ENOMEM', async () => {
  // iso9660 keeps no types in directories: every entry is looked at, and
  // all at once, those calls used to fill the kernel's window.
  const src = join(work, 'iso-many');
  fs.mkdirSync(join(src, 'many'), { recursive: true });
  for (let i = 0; i < 10000; i++) fs.writeFileSync(join(src, 'many', `entry-${i}`), '');
  const image = join(work, 'iso-many.iso');
  run('xorriso', ['-as', 'mkisofs', '-quiet', '-R', '-o', image, src]);
  const k = await Kernel.boot({ heapSize: 1 << 20 });
  const report = new Reporter('fs2tar', { quiet: true });
  let archived = 0;
  try {
    const root = await k.mount(await k.addDisk(image, { readOnly: true }), { type: 'iso9660', readOnly: true });
    const pack = tarPack();
    useOwnHeaders(pack);
    pack.on('data', (chunk: unknown) => (archived += (chunk as Buffer).length));
    const exporter = new TarExporter(k, pack, { format: 'pax', exclude: new Excluder([], true), sort: false }, report);
    await exporter.export(root, (p) => p);
    pack.finalize();
  } finally {
    await k.shutdown();
  }
  expect(report.errors).toBe(0);
  expect(archived).toBeGreaterThan(10000 * 512); // a header each
});

describe('archives', () => {
  let image: string;
  beforeAll(() => {
    image = imageWithTree('ext4');
  });

  test('two exports of the same image are byte-identical; the image is untouched', () => {
    const before = fs.readFileSync(image);
    expectSuccess(cli([image, join(work, 'a.tar')]));
    expectSuccess(cli([image, join(work, 'b.tar')]));
    expect(fs.readFileSync(join(work, 'a.tar')).equals(fs.readFileSync(join(work, 'b.tar')))).toBe(true);
    expect(fs.readFileSync(image).equals(before)).toBe(true);
  });

  test('an archive ends on a whole 10240-byte record, as GNU tar\'s does, before compression too', () => {
    const plain = join(work, 'record.tar');
    expectSuccess(cli([image, plain]));
    const size = fs.statSync(plain).size;
    expect(size % 10240).toBe(0);
    // GNU tar reading whole records from a pipe finds no short last one.
    const strict = spawnSync('sh', ['-c', `cat ${plain} | tar -b 20 -tf - >/dev/null`], { encoding: 'utf8' });
    expect(strict.stderr).toBe('');
    expectSuccess(strict);
    const gz = join(work, 'record.tar.gz');
    expectSuccess(cli(['-z', image, gz]));
    expect(zlib.gunzipSync(fs.readFileSync(gz)).length).toBe(size);
  });

  test('to stdout, gzipped, a subtree, excludes, --mtime, --format gnu, -s', () => {
    const z = spawnSync('sh', ['-c', `node ${fs2tar} -z -C /tree --exclude '*-link' --mtime @1000000000 -s ${join(work, 'labels')} ${image} - | tar -tzvf -`], { encoding: 'utf8' });
    expectSuccess(z);
    expect(z.stdout).toMatch(/\.\/file\n/);
    expect(z.stdout).toMatch(/\.\/sub\/deeper\/leaf\n/);
    expect(z.stdout).not.toMatch(/-link/);
    expect(z.stdout).toMatch(/2001-09-09/);
    const gnu = join(work, 'gnu.tar');
    const r = cli(['--format', 'gnu', image, gnu]);
    expectSuccess(r);
    // The tree's xattrs cannot go: said, not dropped in silence.
    expect(r.stderr).toMatch(/^fs2tar: warning: --format gnu keeps no extended attributes \(capabilities, ACLs\), like those of '\/tree\/[^']+': pax, the default, does\n/);
    expect(run('tar', ['-tf', gnu])).toContain(`./tree/${'n'.repeat(255)}`);
    const x = join(work, 'x-gnu');
    fs.mkdirSync(x);
    run('tar', ['--numeric-owner', '-xpf', gnu, '-C', x]);
    expect(fs.readFileSync(join(x, 'tree/file'), 'utf8')).toBe('some text\n');
  });

  test('-s writes each label beside the path in its own bytes, a newline or a backslash escaped', () => {
    const img = join(work, 'labels.img');
    FILESYSTEMS[0].make(img);
    const names = [Buffer.from('caf\xe9', 'latin1'), Buffer.from('new\nline'), Buffer.from('sp ace'), Buffer.from('back\\slash')];
    const mnt = fs.mkdtempSync(join(work, 'labels-mnt-'));
    run('mount', ['-o', 'loop', img, mnt]);
    try {
      for (const n of names) {
        const path = Buffer.concat([Buffer.from(`${mnt}/`), n]);
        fs.writeFileSync(path, 'x');
        host.setxattr(path, 'security.selinux', Buffer.from('system_u:object_r:etc_t:s0\0'));
      }
    } finally {
      run('umount', [mnt]);
    }
    const labels = join(work, 'labels.txt');
    expectSuccess(cli(['-s', labels, img, join(work, 'labels.tar')]));
    const lines = ['back\\\\slash', 'caf\xe9', 'new\\nline', 'sp ace'].map((n) => Buffer.from(`/${n} system_u:object_r:etc_t:s0\n`, 'latin1'));
    expect(fs.readFileSync(labels)).toEqual(Buffer.concat(lines));
  });

  test('--owner-names takes names from the image\'s /etc/passwd and /etc/group', () => {
    const etc = join(work, 'etc');
    fs.mkdirSync(etc, { recursive: true });
    fs.writeFileSync(join(etc, 'passwd'), 'root:x:0:0::/root:/bin/sh\nowner:x:1234:5678::/:/bin/sh\n');
    fs.writeFileSync(join(etc, 'group'), 'root:x:0:\ngroupie:x:5678:\n');
    const img = join(work, 'names.img');
    FILESYSTEMS[0].make(img);
    spawnSync(process.execPath, [cptofs, '-q', '-i', img, etc, join(tree, 'owned'), '/'], { encoding: 'utf8' });
    const archive = join(work, 'names.tar');
    expectSuccess(cli(['--owner-names', img, archive]));
    expect(run('tar', ['-tvf', archive])).toMatch(/owner\/groupie .* \.\/owned/);
 
    // /etc/passwd as an absolute symlink (to /usr/lib/passwd) is the image's
    // own, as in a chroot; a missing /etc/group is said, and ids go as numbers.
    const root = join(work, 'names-root');
    fs.mkdirSync(join(root, 'etc'), { recursive: true });
    fs.mkdirSync(join(root, 'usr/lib'), { recursive: true });
    fs.copyFileSync(join(etc, 'passwd'), join(root, 'usr/lib/passwd'));
    fs.symlinkSync('/usr/lib/passwd', join(root, 'etc/passwd'));
    const img2 = join(work, 'names-link.img');
    FILESYSTEMS[0].make(img2);
    expectSuccess(spawnSync(process.execPath, [cptofs, '-q', '-i', img2, `${root}/.`, join(tree, 'owned'), '/'], { encoding: 'utf8' }));
    const linked = cli(['--owner-names', img2, join(work, 'names-link.tar')]);
    expectSuccess(linked);
    expect(linked.stderr).toBe('fs2tar: warning: --owner-names: no /etc/group in the image (ENOENT): its ids go as numbers\n');
    expect(run('tar', ['-tvf', join(work, 'names-link.tar')])).toMatch(/owner\/5678 .* \.\/owned/);
  });

  test('a 4 GiB sparse file exports in about the time of its data, and extracts sparse', () => {
    const img = join(work, 'sparse.img');
    FILESYSTEMS[0].make(img);
    const src = join(work, 'sparse-src');
    fs.mkdirSync(src);
    const fd = fs.openSync(join(src, 'huge'), 'w');
    fs.writeSync(fd, Buffer.alloc(1 << 20, 1), 0, 1 << 20, 0);
    fs.writeSync(fd, Buffer.alloc(1 << 20, 2), 0, 1 << 20, 3 * 2 ** 30);
    fs.ftruncateSync(fd, 4 * 2 ** 30);
    fs.closeSync(fd);
    // A 64 MiB filesystem holds it only if the holes stay holes.
    spawnSync(process.execPath, [cptofs, '-q', '-i', img, join(src, 'huge'), '/'], { encoding: 'utf8' });
    const archive = join(work, 'sparse.tar');
    const t0 = Date.now();
    expectSuccess(cli([img, archive]));
    expect(Date.now() - t0).toBeLessThan(20_000);
    expect(fs.statSync(archive).size).toBeLessThan(8 << 20);
    const out = join(work, 'x-sparse');
    untar(archive, out);
    const st = fs.statSync(join(out, 'huge'));
    expect(st.size).toBe(4 * 2 ** 30);
    expect(st.blocks * 512).toBeLessThan(16 << 20);
    const back = fs.openSync(join(out, 'huge'), 'r');
    const b = Buffer.alloc(4);
    fs.readSync(back, b, 0, 4, 3 * 2 ** 30);
    expect([...b]).toEqual([2, 2, 2, 2]);
    fs.closeSync(back);
  });

  test('a socket is skipped with a warning, as GNU tar does', () => {
    const img = join(work, 'sock.img');
    FILESYSTEMS[0].make(img);
    const src = join(work, 'sock-src');
    fs.mkdirSync(src);
    execFileSync('python3', ['-c', `import socket; s = socket.socket(socket.AF_UNIX); s.bind('${join(src, 'sock')}')`]);
    spawnSync(process.execPath, [cptofs, '-q', '-i', img, src, '/'], { encoding: 'utf8' });
    const r = cli([img, join(work, 'sock.tar')]);
    expectSuccess(r);
    expect(r.stderr).toMatch(/sock: socket ignored/);
  });
});

describe('errors', () => {
  test('a missing or corrupt image, an unwritable output: exit 2, no archive left', () => {
    let r = cli([join(work, 'missing.img'), join(work, 'out.tar')]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/missing\.img: no such file or directory \(ENOENT\)/);
    const corrupt = join(work, 'corrupt.img');
    fs.writeFileSync(corrupt, Buffer.alloc(1 << 20, 0x5a));
    r = cli([corrupt, join(work, 'out.tar')]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/no filesystem the kernel knows/);
    expect(fs.existsSync(join(work, 'out.tar'))).toBe(false);
    r = cli([join(work, 'ext4.img'), '/proc/nope/out.tar']);
    expect(r.status).toBe(2);
    expect(fs.readdirSync(work).filter((n) => n.includes('.partial-'))).toEqual([]);
  });

  test('the image itself as the archive (by its name, a symlink, or standard output): refused, the image untouched', () => {
    const image = join(work, 'self.img');
    fs.copyFileSync(imageWithTree('ext4'), image);
    const sum = run('sha256sum', [image]).split(' ')[0];
    const link = join(work, 'self-link');
    fs.rmSync(link, { force: true });
    fs.symlinkSync(image, link);
    for (const target of [image, link]) {
      const r = cli([image, target]);
      expect(r.status).toBe(2);
      expect(r.stderr).toBe(`fs2tar: '${target}' is the image being read: not overwritten\n`);
    }
    const r = spawnSync('bash', ['-c', `node ${fs2tar} ${image} - >> ${image}`], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toBe("fs2tar: 'standard output' is the image being read: not overwritten\n");
    expect(run('sha256sum', [image]).split(' ')[0]).toBe(sum);
  });

  test('-z with --zstd: a usage error, before the kernel boots', () => {
    // The image does not exist: had the kernel booted, it would say ENOENT.
    for (const args of [['-z', '--zstd'], ['--zstd', '--gzip']]) {
      const r = cli([...args, join(work, 'missing.img'), join(work, 'out.tar')]);
      expect([args, r.status]).toEqual([args, 2]);
      expect(r.stderr).toMatch(/option '.*(--gzip|--zstd)' cannot be used with option '.*(--gzip|--zstd)'/);
      expect(r.stderr).not.toMatch(/ENOENT/);
    }
  });

  test('a directory or an inode with a bad checksum: named as in the image, in the sentence and the system\'s error; exit 1', () => {
    const image = join(work, 'damaged.img');
    imageWithDamagedDirectory(image, 'ext4');
    // And a file whose inode fails its checksum (its i_generation, which
    // nothing else looks at, changed): its lstat fails.
    const content = join(work, 'damaged-content');
    fs.writeFileSync(content, 'x');
    run('debugfs', ['-w', '-R', `write ${content} file`, image]);
    const [, block, offset] = /block (\d+), offset (0x[0-9a-f]+)/.exec(run('debugfs', ['-R', 'imap file', image]))!;
    const fd = fs.openSync(image, 'r+');
    fs.writeSync(fd, Buffer.alloc(4, 0xff), 0, 4, Number(block) * 4096 + Number(offset) + 0x64);
    fs.closeSync(fd);
    const archive = join(work, 'damaged.tar');
    const r = cli([image, archive]);
    expect(r.status).toBe(1);
    // Not the kernel's own paths to them, under the image's mount point.
    expect(r.stderr.split('\n')).toEqual([
      expect.stringMatching(/^fs2tar: cannot read directory '\/damaged': EBADMSG: .*, scandir '\/damaged'$/),
      expect.stringMatching(/^fs2tar: \/file: EBADMSG: .*, lstat '\/file'$/),
      '',
    ]);
    expect(run('tar', ['-tf', archive]).split('\n')).toEqual(expect.arrayContaining(['./damaged/', './lost+found/']));
  });

  test('a closed pipe (| head): a clear message, a failing status', () => {
    const image = imageWithTree('ext4');
    const r = spawnSync('bash', ['-c', `set -o pipefail; node ${fs2tar} ${image} - | head -c 1000 >/dev/null`], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/fs2tar: the archive's reader went away \(EPIPE\)/);
  });
});

const ACL_SCRIPT = `import os,struct,sys
U = 0xffffffff
entries = [(1, 6, U), (2, 4, 1000), (4, 4, U), (8, 5, 100), (0x10, 5, U), (0x20, 4, U)]
os.setxattr(sys.argv[1], 'system.posix_acl_access', struct.pack('<I', 2) + b''.join(struct.pack('<HHI', *e) for e in entries))`;

describe('odd outputs, unreadable files, old times, long links, ACLs', () => {
  let image: string;
  beforeAll(() => {
    const src = join(work, 'odd-src');
    const deep = `${'s'.repeat(50)}/${'t'.repeat(50)}`;
    fs.mkdirSync(join(src, deep), { recursive: true });
    fs.writeFileSync(join(src, 'old'), 'hi');
    fs.symlinkSync(`${deep}/${'u'.repeat(50)}`, join(src, 'longlink'));
    // Two seconds before 1970, and an xattr whose name holds '='.
    run('python3', ['-c', 'import os,sys; os.setxattr(sys.argv[1], "user.a=b", b"eq"); os.utime(sys.argv[1], (-2, -2))', join(src, 'old')]);
    // An ACL: user 1000 may read, group 100 read and run (the xattr's own form).
    fs.writeFileSync(join(src, 'acl'), 'x');
    run('python3', ['-c', ACL_SCRIPT, join(src, 'acl')]);
    image = join(work, 'odd.img');
    fs.rmSync(image, { force: true });
    run('mke2fs', ['-q', '-t', 'ext4', '-d', src, image, '64M']);
  });

  test('a FIFO or a symlink as the output is written to, not replaced', () => {
    const fifo = join(work, 'archive-fifo');
    fs.rmSync(fifo, { force: true });
    run('mkfifo', [fifo]);
    // (Were the FIFO replaced, its reader would wait for ever: hence timeout.)
    const reader = spawnSync('sh', ['-c', `timeout 60 cat ${fifo} > ${fifo}.out & ${process.execPath} ${fs2tar} ${image} ${fifo}; wait`], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    expectSuccess(reader);
    expect(fs.lstatSync(fifo).isFIFO()).toBe(true);
    expect(run('tar', ['-tf', `${fifo}.out`])).toMatch(/\.\/old/);

    const link = join(work, 'archive-link');
    const target = join(work, 'archive-target.tar');
    fs.rmSync(link, { force: true });
    fs.symlinkSync(target, link);
    expectSuccess(cli([image, link]));
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
    expect(run('tar', ['-tf', target])).toMatch(/\.\/old/);
  });

  test('times before 1970, a long link target with slashes, an xattr name with =: as GNU tar has them', () => {
    const archive = join(work, 'odd.tar');
    const r = cli([image, archive]);
    expect(r.stderr).toBe('');
    const listing = spawnSync('tar', ['--full-time', '-tvf', archive], { encoding: 'utf8' });
    expectSuccess(listing);
    expect(listing.stdout).toMatch(/1969-12-31 23:59:58 \.\/old/);
    expect(listing.stdout).toContain(`./longlink -> ${'s'.repeat(50)}/${'t'.repeat(50)}/${'u'.repeat(50)}\n`);
    // A directory name of 101-156 bytes is split between prefix and name
    // fields with a name left in the name field (some readers need one).
    const fields = run('python3', [
      '-c',
      `import sys
data = open(sys.argv[1], 'rb').read()
for at in range(0, len(data) - 512, 512):
    h = data[at:at + 512]
    if h[156:157] == b'5' and h[345:500].rstrip(b'\\0'):
        print(h[345:500].rstrip(b'\\0').decode(), h[0:100].rstrip(b'\\0').decode())`,
      archive,
    ]);
    expect(fields.trim()).toBe(`./${'s'.repeat(50)} ${'t'.repeat(50)}/`);
    const out = join(work, 'odd-out');
    untar(archive, out);
    expect(fs.statSync(join(out, 'old')).mtimeMs).toBe(-2000);
    expect(run('python3', ['-c', 'import os,sys; print(os.getxattr(sys.argv[1], "user.a=b").decode())', join(out, 'old')]).trim()).toBe('eq');
  });

  test('paths longer than PATH_MAX go in whole, as GNU tar archives them', () => {
    const src = join(work, 'deep-src');
    fs.rmSync(src, { recursive: true, force: true });
    fs.mkdirSync(src);
    // Made a directory fd at a time: the host takes no path that long either.
    run('python3', [
      '-c',
      `import os,sys
fd = os.open(sys.argv[1], os.O_RDONLY)
for i in range(30):
    name = 'd' * 200 + str(i)
    os.mkdir(name, dir_fd=fd)
    fd = os.open(name, os.O_RDONLY, dir_fd=fd)
f = os.open('file', os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
os.write(f, b'deep\\n')`,
      src,
    ]);
    const deep = join(work, 'deep.img');
    fs.rmSync(deep, { force: true });
    run('mke2fs', ['-q', '-t', 'ext4', '-d', src, deep, '64M']);
    run('rm', ['-r', src]); // GNU rm goes down by fds; node's rmSync cannot
    const archive = join(work, 'deep.tar');
    expectSuccess(cli([deep, archive]));
    const file = `./${Array.from({ length: 30 }, (_, i) => `${'d'.repeat(200)}${i}`).join('/')}/file`;
    expect(run('tar', ['-tf', archive]).split('\n')).toContain(file);
    const member = run('python3', ['-c', 'import sys,tarfile; print(tarfile.open(sys.argv[1]).extractfile(sys.argv[2]).read().decode(), end="")', archive, file]);
    expect(member).toBe('deep\n');
  });

  test('ACLs come back with GNU tar\'s --acls alone', () => {
    const archive = join(work, 'acl.tar');
    expectSuccess(cli([image, archive]));
    const out = join(work, 'acl-out');
    fs.mkdirSync(out, { recursive: true });
    run('tar', ['--acls', '--numeric-owner', '-xpf', archive, '-C', out, './acl']);
    const xattr = (path: string) =>
      run('python3', ['-c', 'import os,sys; print(os.getxattr(sys.argv[1], "system.posix_acl_access").hex())', path]).trim();
    expect(xattr(join(out, 'acl'))).toBe(xattr(join(work, 'odd-src', 'acl')));
  });

  test('SIGINT at any moment (boot, mount, export): exit 130, no archive left, nothing said', async () => {
    const src = join(work, 'int-src');
    fs.mkdirSync(src, { recursive: true });
    for (let i = 0; i < 8; i++) fs.writeFileSync(join(src, `f${i}`), Buffer.alloc(32 << 20, i + 1));
    const big = join(work, 'int.img');
    fs.rmSync(big, { force: true });
    run('mke2fs', ['-q', '-t', 'ext4', '-d', src, big, '512M']);
    const archive = join(work, 'int.tar');
    // The handler is there from before the kernel boots: whether the
    // signal comes during the boot, the mount or the export (the delays
    // spread over them), it stops the command the same way.
    // Twice at once, as timeout(1) signals: one interruption.
    for (const afterMs of [0, 25, 50, 75, 100, 150, 200, 300, 600]) {
      const { status, stderr } = await runInterrupted(process.execPath, [fs2tar, big, archive], afterMs, 2);
      expect({ afterMs, status, stderr }).toEqual({ afterMs, status: 130, stderr: '' });
      expect(fs.readdirSync(work).filter((n) => n.includes('int.tar'))).toEqual([]);
    }
  });

  test('a hard-linked FIFO is a hard link; -v names a sparse file as it is; --exclude ./dir', () => {
    const src = join(work, 'links-src');
    fs.mkdirSync(join(src, 'sub'), { recursive: true });
    fs.writeFileSync(join(src, 'sub/x'), 'x');
    run('mkfifo', [join(src, 'p')]);
    fs.linkSync(join(src, 'p'), join(src, 'p2'));
    fs.writeFileSync(join(src, 'sparse'), Buffer.alloc(4096, 1));
    fs.truncateSync(join(src, 'sparse'), 16 << 20);
    const img = join(work, 'links.img');
    fs.rmSync(img, { force: true });
    run('mke2fs', ['-q', '-t', 'ext4', '-d', src, img, '32M']);
    const archive = join(work, 'links.tar');
    const r = cli(['-v', '--exclude', './sub', img, archive]);
    expectSuccess(r);
    expect(r.stdout.split('\n').sort().filter(Boolean)).toEqual(['./', './lost+found/', './p', './p2', './sparse']);
    expect(run('tar', ['-tvf', archive])).toMatch(/^h.* \.\/p2 link to \.\/p$/m);
  });

  test('names and link targets that are not UTF-8 go in byte for byte, in pax and GNU archives', () => {
    const src = join(work, 'bytes-src');
    fs.rmSync(src, { recursive: true, force: true });
    fs.mkdirSync(src);
    makeByteNames(src);
    const img = join(work, 'bytes.img');
    fs.rmSync(img, { force: true });
    run('mke2fs', ['-q', '-t', 'ext4', '-d', src, img, '16M']);
    for (const format of ['pax', 'gnu']) {
      const archive = join(work, `bytes-${format}.tar`);
      const r = cli(['--format', format, img, archive]);
      expect(r.stderr).toBe('');
      expectSuccess(r);
      const out = join(work, `bytes-out-${format}`);
      fs.rmSync(out, { recursive: true, force: true });
      untar(archive, out);
      expect(byteNames(out)).toBe(byteNames(src));
    }
  });

  test('--mtime @-1.5 is 1.5 s before 1970; a bad --mtime or a lone --clamp-mtime: exit 2', () => {
    const archive = join(work, 'mtime.tar');
    expectSuccess(cli(['--mtime', '@-1.5', image, archive]));
    const times = run('python3', ['-c', 'import sys,tarfile; print(set(m.pax_headers["mtime"] for m in tarfile.open(sys.argv[1])))', archive]);
    expect(times.trim()).toBe("{'-1.5'}");
    const bad = cli(['--mtime', '@abc', image, archive]);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--mtime: not @SECONDS/);
    expect(cli(['--clamp-mtime', image, archive]).stderr).toMatch(/--clamp-mtime needs --mtime/);
  });

  test('-C stays in the image and must name a directory', () => {
    const up = cli(['-C', '../..', image, join(work, 'up.tar')]);
    expectSuccess(up);
    expect(run('tar', ['-tf', join(work, 'up.tar')]).split('\n')).toContain('./old');
    const file = cli(['-C', '/old', image, join(work, 'file.tar')]);
    expect(file.status).toBe(2);
    expect(file.stderr).toMatch(/\/old: not a directory in the image/);
    const missing = cli(['-C', '/nowhere', image, join(work, 'file.tar')]);
    expect(missing.status).toBe(2);
    expect(missing.stderr).toMatch(/\/nowhere: no such directory in the image/);
  });

  test('a file the kernel cannot read: named, padded with zeros, the rest archived; exit 1', () => {
    const src = join(work, 'squash-src');
    fs.mkdirSync(src, { recursive: true });
    fs.writeFileSync(join(src, 'big'), Array.from({ length: 40000 }, (_, i) => `line ${i} of a compressible file\n`).join(''));
    fs.writeFileSync(join(src, 'zlast'), 'tail');
    const squash = join(work, 'bad.squashfs');
    fs.rmSync(squash, { force: true });
    run('mksquashfs', [src, squash, '-quiet', '-noappend']);
    const bytes = fs.readFileSync(squash);
    for (let i = 2000; i < 2400; i++) bytes[i] ^= 0x55; // inside big's first data block
    fs.writeFileSync(squash, bytes);
    const archive = join(work, 'bad.tar');
    const r = cli([squash, archive]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/fs2tar: cannot read '\/big': EIO.*padded with zeros/);
    const listing = run('tar', ['-tvf', archive]);
    expect(listing).toMatch(new RegExp(` ${fs.statSync(join(src, 'big')).size} .* \\./big`));
    expect(listing).toMatch(/\.\/zlast/);

    // A small file (read ahead whole) too: kept, padded, not left out.
    const smallSrc = join(work, 'squash-small-src');
    fs.mkdirSync(smallSrc, { recursive: true });
    fs.writeFileSync(join(smallSrc, 'small'), Array.from({ length: 2500 }, (_, i) => `line ${i} of a small file\n`).join(''));
    const small = join(work, 'bad-small.squashfs');
    fs.rmSync(small, { force: true });
    run('mksquashfs', [smallSrc, small, '-quiet', '-noappend', '-no-fragments']);
    const smallBytes = fs.readFileSync(small);
    for (let i = 200; i < 400; i++) smallBytes[i] ^= 0x55; // inside its one data block
    fs.writeFileSync(small, smallBytes);
    const r2 = cli([small, join(work, 'bad-small.tar')]);
    expect(r2.status).toBe(1);
    expect(r2.stderr).toBe("fs2tar: cannot read '/small': EIO: i/o error, read '/small'; padded with zeros\n");
    expect(run('tar', ['-tvf', join(work, 'bad-small.tar')])).toMatch(new RegExp(` ${fs.statSync(join(smallSrc, 'small')).size} .* \\./small`));
  });
});
