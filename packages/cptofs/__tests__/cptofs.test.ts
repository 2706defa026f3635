// cptofs and cpfromfs, run as the commands they are, on real images: a tree
// of every kind of entry goes in, is checked through a host loop mount
// entry by entry (stat and xattrs), comes back out, and is checked again.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { Excluder, host, Kernel, Reporter } from '@lkl-um/core';
import { asBytes, hostSide, kernelSide, parseNoPreserve, TreeCopier } from '../src/copy';
import {
  expectSuccess,
  FILESYSTEMS,
  imageWithDamagedDirectory,
  isRoot,
  run,
  runInterrupted,
  tempDir,
  withImageOnFullHost,
} from '../../core/__tests__/helpers/images';
import { byteNames, copyNeedingRecovery, makeByteNames, makeTree, survey, withLoop } from '../../core/__tests__/helpers/tree';

jest.setTimeout(300_000);

const bin = (name: string) => join(__dirname, '../bin', `${name}.js`);

function cli(name: 'cptofs' | 'cpfromfs', args: string[]) {
  const r = spawnSync(process.execPath, [bin(name), ...args], { encoding: 'utf8' });
  return r;
}

let work: string;
let tree: string;
let expected: ReturnType<typeof survey>;

beforeAll(() => {
  if (!isRoot()) throw new Error('these tests make device nodes and loop mounts: run them as root');
  work = tempDir();
  tree = makeTree(work);
  expected = survey(tree);
});

afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe.each(['ext4', 'btrfs', 'xfs'])('%s', (type) => {
  test('a tree of every kind goes in and out whole', () => {
    const f = FILESYSTEMS.find((x) => x.type === type)!;
    const image = join(work, `${type}.img`);
    f.make(image);

    const into = cli('cptofs', ['-i', image, '-t', type, tree, '/']);
    expect(into.stderr).toBe('');
    expectSuccess(into);
    f.fsck!(image);
    if (type === 'ext4') expect(run('dumpe2fs', ['-h', image])).not.toMatch(/needs_recovery/);

    // The host kernel sees exactly what was in the tree.
    const inImage = withLoop(image, (mnt) => survey(join(mnt, 'tree')));
    expect(inImage).toEqual(expected);

    // And cpfromfs brings it back exactly.
    const out = join(work, `out-${type}`);
    fs.mkdirSync(out);
    const back = cli('cpfromfs', ['-i', image, '/tree', out]);
    expect(back.stderr).toBe('');
    expectSuccess(back);
    expect(survey(join(out, 'tree'))).toEqual(expected);
    f.fsck!(image); // cpfromfs changed nothing
    fs.rmSync(out, { recursive: true });
    fs.rmSync(image);
  });
});

test('vfat keeps what it can, and says what it cannot', () => {
  const image = join(work, 'vfat.img');
  FILESYSTEMS.find((x) => x.type === 'vfat')!.make(image);
  const into = cli('cptofs', ['-i', image, tree, '/']);
  expectSuccess(into);
  expect(into.stderr).toMatch(/warning: the image cannot keep owners/);
  expect(into.stderr).toMatch(/warning: the image cannot hold symbolic links/);
  expect(into.stderr).toMatch(/warning: the image cannot hold FIFOs, sockets or devices/);
  expect(into.stderr).toMatch(/warning: the image cannot keep hard links: copying them as files/);
  run('fsck.vfat', ['-n', image]);

  const out = join(work, 'out-vfat');
  fs.mkdirSync(out);
  expectSuccess(cli('cpfromfs', ['-i', image, '--no-preserve=ownership', '/tree', out]));
  for (const [rel, want] of Object.entries(expected.entries)) {
    if (want.type !== 0o100000) continue;
    const got = createHash('sha256').update(fs.readFileSync(join(out, 'tree', rel))).digest('hex');
    expect([rel, got]).toEqual([rel, want.content]);
  }
  fs.rmSync(out, { recursive: true, force: true });
});

describe('options', () => {
  let image: string;
  beforeEach(() => {
    image = join(work, 'opts.img');
    fs.rmSync(image, { force: true });
    FILESYSTEMS[0].make(image);
  });

  test('-o, -g, -s, --exclude, --no-preserve, and many sources into a directory', () => {
    const r = cli('cptofs', [
      '-i', image, '-o', '0', '-g', '0', '-s', 'system_u:object_r:etc_t:s0',
      '--exclude', 'sub', '--exclude', '*-link', '--no-preserve=timestamps',
      join(tree, 'file'), join(tree, 'sub'), join(tree, 'relative-link'), join(tree, 'owned'), '/',
    ]);
    expect(r.stderr).toBe('');
    expectSuccess(r);
    withLoop(image, (mnt) => {
      expect(fs.readdirSync(mnt).sort()).toEqual(['file', 'lost+found', 'owned']);
      const st = fs.statSync(join(mnt, 'owned'));
      expect([st.uid, st.gid]).toEqual([0, 0]);
      expect(host.getxattr(join(mnt, 'owned'), 'security.selinux').toString()).toBe('system_u:object_r:etc_t:s0\0');
      expect(st.mtimeMs).toBeGreaterThan(Date.now() - 600_000);
    });
  });

  test('--create makes the image; -P picks a partition', () => {
    const fresh = join(work, 'created.img');
    fs.rmSync(fresh, { force: true });
    expectSuccess(cli('cptofs', ['-i', fresh, '-t', 'ext4', '--create', '32M', join(tree, 'file'), '/']));
    expect(fs.statSync(fresh).size).toBe(32 << 20);
    run('e2fsck', ['-fn', fresh]);

    const parted = join(work, 'parted.img');
    fs.writeFileSync(parted, '');
    fs.truncateSync(parted, 64 << 20);
    run('sfdisk', ['-q', parted], { input: 'label: gpt\nsize=16MiB\nsize=40MiB\n' });
    const p2 = JSON.parse(run('sfdisk', ['-J', parted])).partitiontable.partitions[1];
    const part = join(work, 'p2.img');
    fs.writeFileSync(part, '');
    fs.truncateSync(part, p2.size * 512);
    run('mkfs.ext4', ['-q', '-F', part]);
    run('dd', [`if=${part}`, `of=${parted}`, 'bs=512', `seek=${p2.start}`, 'conv=notrunc', 'status=none']);
    expectSuccess(cli('cptofs', ['-i', parted, '-P', '2', join(tree, 'file'), '/']));
    const out = join(work, 'from-p2');
    expectSuccess(cli('cpfromfs', ['-i', parted, '-P', '2', '/file', out]));
    expect(fs.readFileSync(out, 'utf8')).toBe('some text\n');
  });

  test('cpfromfs expands a quoted glob inside the image, and never modifies it', () => {
    expectSuccess(cli('cptofs', ['-i', image, tree, '/']));
    const before = createHash('sha256').update(fs.readFileSync(image)).digest('hex');
    const out = join(work, 'globbed');
    fs.mkdirSync(out);
    const r = cli('cpfromfs', ['-i', image, '/tree/hard*', '/tree/s*', out]);
    expect(r.stderr).toBe('');
    expect(fs.readdirSync(out).sort()).toEqual(['hard1', 'hard2', 'setuid', 'socket', 'sparse', 'sticky', 'sub']);
    expect(createHash('sha256').update(fs.readFileSync(image)).digest('hex')).toBe(before);
    fs.rmSync(out, { recursive: true });
  });

  test('--help shows every option with examples; --version names the kernel', () => {
    const help = cli('cptofs', ['--help']);
    expectSuccess(help);
    for (const o of ['-i', '-t', '-P', '-o', '-g', '-s', '-m', '-p', '--no-preserve', '--exclude', '-v', '-q', '--create', 'Examples:']) {
      expect(help.stdout).toContain(o);
    }
    expect(cli('cpfromfs', ['--version']).stdout).toMatch(/cpfromfs \S+ \(lkl-um; Linux 6\.12/);
    // Read in part (| head): no EPIPE stack trace, success.
    const head = spawnSync('bash', ['-o', 'pipefail', '-c', `"${process.execPath}" "${bin('cpfromfs')}" --help | head -c 1`], { encoding: 'utf8' });
    expect(head.stderr).toBe('');
    expectSuccess(head);
  });
});

describe('errors', () => {
  let image: string;
  beforeEach(() => {
    image = join(work, 'err.img');
    fs.rmSync(image, { force: true });
    FILESYSTEMS[0].make(image);
  });

  test('a missing source: named, the rest copied, exit 1', () => {
    const r = cli('cptofs', ['-i', image, join(work, 'nope'), join(tree, 'file'), '/']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/cptofs: cannot stat '.*nope': No such file or directory/);
    withLoop(image, (mnt) => expect(fs.existsSync(join(mnt, 'file'))).toBe(true));
  });

  test('a missing image, a wrong type, a bad destination: exit 2, no stack trace', () => {
    let r = cli('cptofs', ['-i', join(work, 'missing.img'), tree, '/']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/missing\.img: no such file or directory \(ENOENT\)/);
    expect(r.stderr).not.toMatch(/ at /);
    r = cli('cptofs', ['-i', image, '-t', 'xfs', tree, '/']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/\.img: cannot mount as xfs: EINVAL/);
    r = cli('cptofs', ['-i', image, join(tree, 'file'), join(tree, 'empty'), '/file-does-not-exist']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/is not a directory/);
    r = cli('cptofs', ['-i', image]);
    expect(r.status).toBe(2);
    r = cli('cptofs', ['-i', image, '--mb', 'lots', tree, '/']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--mb must be a number/);
  });

  test('usage errors say what is wrong, in the usage line\'s words: exit 2', () => {
    // An unknown option is named as such, -i given or not (commander checks
    // required options first, so -i is checked after parsing).
    for (const args of [['-X'], ['-V', tree, '/'], ['-i', image, '-X', tree, '/']]) {
      const r = cli('cptofs', args);
      expect([args, r.status]).toEqual([args, 2]);
      // Named as the command's, as GNU tools name theirs.
      expect(r.stderr).toMatch(new RegExp(`^cptofs: unknown option '${args.includes('-V') ? '-V' : '-X'}'`));
      expect(r.stderr).not.toMatch(/required option/);
    }
    let r = cli('cpfromfs', ['-X', '/', work]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^cpfromfs: unknown option '-X'/);
    // A missing -i is named as such.
    for (const name of ['cptofs', 'cpfromfs'] as const) {
      r = cli(name, [tree, '/']);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(new RegExp(`^${name}: required option '-i, --filesystem-image <image>' not specified`));
    }
    // Missing paths are named as the usage line names them.
    r = cli('cptofs', ['-i', image]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/missing required argument 'SOURCE'/);
    r = cli('cptofs', ['-i', image, tree]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/missing destination \(usage: cptofs -i IMAGE SOURCE\.\.\. DEST\)/);
    // An owner past uid_t would wrap (2^32 to root; 2^32-1 is chown's "unchanged").
    for (const [option, id] of [['-o', '4294967295'], ['-g', '4294967296'], ['-o', '99999999999']]) {
      r = cli('cptofs', ['-i', image, option, id, tree, '/']);
      expect([option, id, r.status]).toEqual([option, id, 2]);
      expect(r.stderr).toMatch(/must be a number up to 4294967294/);
    }
  });

  test('a full image: ENOSPC named, exit 1, what fit is intact and fsck clean', () => {
    const small = join(work, 'small.img');
    fs.writeFileSync(small, '');
    fs.truncateSync(small, 4 << 20);
    run('mkfs.ext4', ['-q', '-F', small]);
    const big = join(work, 'big-source');
    fs.mkdirSync(big, { recursive: true });
    fs.writeFileSync(join(big, 'a-small'), 'fits');
    fs.writeFileSync(join(big, 'b-huge'), Buffer.alloc(8 << 20, 1));
    const r = cli('cptofs', ['-i', small, big, '/']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/ENOSPC/);
    run('e2fsck', ['-fn', small]);
    withLoop(small, (mnt) => expect(fs.readFileSync(join(mnt, 'big-source/a-small'), 'utf8')).toBe('fits'));
  });

  test('the host\'s filesystem full under the image: told, exit 2, not success', async () => {
    const source = join(work, 'forty-mib');
    fs.writeFileSync(source, Buffer.alloc(40 << 20, 7));
    await withImageOnFullHost(join(work, 'host-full'), (image) => {
      const r = cli('cptofs', ['-i', image, source, '/']);
      expect(r.status).toBe(2);
      expect(r.stderr).toContain(`${image}: what was written may not all be in the image: EIO`);
      expect(r.stderr).toContain("the host's filesystem holding it is full");
      expect(r.stderr).toMatch(/the kernel said: .*I\/O error/);
    });
  });

  describe('a damaged directory met after a file was copied', () => {
    // The file first, still in the kernel's cache; then a directory of the
    // same name as the damaged one, to copy into.
    const sources = () => {
      const dir = join(work, 'into-damaged');
      fs.mkdirSync(join(dir, 'damaged'), { recursive: true });
      fs.writeFileSync(join(dir, 'first'), Buffer.alloc(5 << 20, 3));
      fs.writeFileSync(join(dir, 'damaged/x'), 'x');
      return [join(dir, 'first'), join(dir, 'damaged')];
    };

    test('ext4 shuts down (errors=remount-ro): the file is lost, and that is told, exit 2', () => {
      const image = join(work, 'damaged-ro.img');
      imageWithDamagedDirectory(image, 'ext4', 'remount-ro');
      const r = cli('cptofs', ['-i', image, ...sources(), '/']);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/cannot copy '.*damaged\/x' to '\/damaged\/x': EBADMSG: bad checksum: the filesystem is damaged/);
      expect(r.stderr).toMatch(
        new RegExp(`${image}: the filesystem shut itself down after an error: what was written may not all be in the image; the kernel said: .*Remounting filesystem read-only`),
      );
      expect(run('debugfs', ['-R', 'stat /first', image])).not.toMatch(/Size: 5242880/);
    });

    test('vfat goes read-only: the file is lost, and that is told, exit 2', () => {
      const image = join(work, 'damaged.vfat');
      imageWithDamagedDirectory(image, 'vfat');
      const r = cli('cptofs', ['-i', image, ...sources(), '/']);
      expect(r.status).toBe(2);
      expect(r.stderr).toContain(
        `${image}: the filesystem went read-only after an error: what was written may not all be in the image; ` +
          'the kernel said: FAT-fs (vda): error, invalid access to FAT (entry 0x00000001)',
      );
      expect(run('mdir', ['-i', image, '::/first'])).not.toMatch(/5242880/);
    });

    test('a squashfs image, which the kernel mounts read-only: each file refused, nothing lost to tell, exit 1', () => {
      const image = join(work, 'plain.squashfs');
      FILESYSTEMS.find((f) => f.type === 'squashfs')!.make(image, tree);
      const r = cli('cptofs', ['-i', image, join(tree, 'file'), '/']);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/EROFS/);
      expect(r.stderr).not.toMatch(/may not all be in the image/);
    });

    test('ext4 goes on (errors=continue): the file is kept, only the directory fails, exit 1', () => {
      const image = join(work, 'damaged-continue.img');
      imageWithDamagedDirectory(image, 'ext4', 'continue');
      const r = cli('cptofs', ['-i', image, ...sources(), '/']);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/cannot copy '.*damaged\/x' to '\/damaged\/x': EBADMSG/);
      expect(r.stderr).not.toMatch(/may not all be in the image/);
      const out = join(work, 'damaged-first');
      run('debugfs', ['-R', `dump /first ${out}`, image]);
      expect(fs.readFileSync(out).equals(Buffer.alloc(5 << 20, 3))).toBe(true);
    });
  });

  test('a read-only image: a clear error', () => {
    run('chattr', ['+i', image]);
    try {
      const r = cli('cptofs', ['-i', image, join(tree, 'file'), '/']);
      expect(r.status).toBe(2);
      // Nothing about the library's options: words for the command line.
      expect(r.stderr).toBe(`cptofs: ${image}: no permission to write it here (EROFS): it can only be read\n`);
      // cpfromfs only reads: fine.
      const out = join(work, 'ro-out');
      expectSuccess(cli('cpfromfs', ['-i', image, '/lost+found', out]));
    } finally {
      run('chattr', ['-i', image]);
    }
  });
});

describe('many at once, interruptions, links and odd paths', () => {
  const freshImage = (name: string, size = 512 << 20) => {
    const image = join(work, name);
    fs.rmSync(image, { force: true });
    fs.writeFileSync(image, '');
    fs.truncateSync(image, size);
    run('mkfs.ext4', ['-q', '-F', image]);
    return image;
  };
  const sum = (path: string) => createHash('sha256').update(fs.readFileSync(path)).digest('hex');

  test('a dozen 20 MiB files at once share the window: all go in whole', () => {
    const src = join(work, 'dozen');
    fs.mkdirSync(src, { recursive: true });
    for (let i = 0; i < 12; i++) fs.writeFileSync(join(src, `f${i}`), Buffer.alloc(20 << 20, i + 1));
    const image = freshImage('dozen.img');
    const r = cli('cptofs', ['-i', image, src, '/']);
    expect(r.stderr).toBe('');
    expectSuccess(r);
    run('e2fsck', ['-fn', image]);
    withLoop(image, (mnt) => {
      for (let i = 0; i < 12; i++) expect(sum(join(mnt, 'dozen', `f${i}`))).toBe(sum(join(src, `f${i}`)));
    });
  });

  test('a walk of 20 000 entries through a 1 MiB window waits for room: no ENOMEM', async () => {
    // The walk used to look at every entry of a directory at once, each
    // call holding its buffers in the window until the window ran out.
    const src = join(work, 'many-entries');
    fs.mkdirSync(src, { recursive: true });
    for (let d = 0; d < 4; d++) {
      fs.mkdirSync(join(src, `d${d}`), { recursive: true });
      for (let i = 0; i < 5000; i++) fs.writeFileSync(join(src, `d${d}`, `file-with-a-longer-name-${i}`), '');
    }
    const image = join(work, 'many-entries.img');
    fs.rmSync(image, { force: true });
    fs.writeFileSync(image, '');
    fs.truncateSync(image, 64 << 20);
    run('mkfs.ext4', ['-q', '-F', '-N', '30000', '-d', src, image]);
    const k = await Kernel.boot({ heapSize: 1 << 20 });
    const out = join(work, 'many-entries.out');
    fs.rmSync(out, { recursive: true, force: true });
    const report = new Reporter('cpfromfs', { quiet: true });
    try {
      const root = await k.mount(await k.addDisk(image, { readOnly: true }), { readOnly: true });
      const copier = new TreeCopier(kernelSide(k), hostSide, { preserve: parseNoPreserve(undefined), exclude: new Excluder([]) }, report);
      await copier.copy(asBytes(root), asBytes(out), '');
    } finally {
      await k.shutdown();
    }
    expect(report.errors).toBe(0);
    for (let d = 0; d < 4; d++) expect(fs.readdirSync(join(out, `d${d}`)).length).toBe(5000);
    fs.rmSync(out, { recursive: true });
  });

  test('from a library, a umask on either side takes nothing from the modes kept', async () => {
    const src = join(work, 'modes-src');
    fs.rmSync(src, { recursive: true, force: true });
    fs.mkdirSync(join(src, 'open'), { recursive: true });
    fs.writeFileSync(join(src, 'open/shared'), 'everyone writes');
    fs.chmodSync(join(src, 'open/shared'), 0o666);
    fs.chmodSync(join(src, 'open'), 0o777);
    const image = join(work, 'modes.img');
    fs.rmSync(image, { force: true });
    fs.writeFileSync(image, '');
    fs.truncateSync(image, 32 << 20);
    run('mkfs.ext4', ['-q', '-F', image]);
    const out = join(work, 'modes.out');
    fs.rmSync(out, { recursive: true, force: true });
    const report = new Reporter('cptofs', { quiet: true });
    const options = { preserve: parseNoPreserve(undefined), exclude: new Excluder([]) };
    const hostUmask = process.umask(0o027);
    const k = await Kernel.boot();
    try {
      await k.sys.umask(0o022);
      const root = await k.mount(await k.addDisk(image));
      await new TreeCopier(hostSide, kernelSide(k), options, report).copy(asBytes(join(src, 'open')), asBytes(`${root}/open`), '');
      expect((await k.fs.stat(`${root}/open`)).mode & 0o7777).toBe(0o777);
      expect((await k.fs.stat(`${root}/open/shared`)).mode & 0o7777).toBe(0o666);
      await new TreeCopier(kernelSide(k), hostSide, options, report).copy(asBytes(`${root}/open`), asBytes(out), '');
    } finally {
      await k.shutdown();
      process.umask(hostUmask);
    }
    expect(report.errors).toBe(0);
    expect(fs.statSync(out).mode & 0o7777).toBe(0o777);
    expect(fs.statSync(join(out, 'shared')).mode & 0o7777).toBe(0o666);
  });

  test('SIGINT in the middle, told twice at once: exit 130 after the image is unmounted clean', async () => {
    const src = join(work, 'long');
    fs.mkdirSync(src, { recursive: true });
    const block = Buffer.alloc(32 << 20, 7);
    for (let i = 0; i < 24; i++) fs.writeFileSync(join(src, `f${i}`), block);
    const image = freshImage('interrupted.img', 1 << 30);
    // Twice, 20 ms apart, as timeout(1) does (the child, then its group):
    // one interruption, not an exit before the unmount.
    const { status, stderr } = await runInterrupted(process.execPath, [bin('cptofs'), '-i', image, src, '/'], 300, 2);
    const [first, ...rest] = stderr.trimEnd().split('\n');
    expect(first).toBe('cptofs: interrupted: syncing and unmounting what was copied');
    expect(status).toBe(130);
    const done = createHash('sha256').update(fs.readFileSync(image)).digest('hex');
    run('e2fsck', ['-fn', image]); // clean at once: nothing left to write after exit
    await new Promise((r) => setTimeout(r, 1000));
    expect(createHash('sha256').update(fs.readFileSync(image)).digest('hex')).toBe(done);
    // The files cut short are named; every other file there is whole.
    const incomplete = new Set<string>();
    for (const line of rest) {
      const m = /^cptofs: interrupted: '(\/long\/f\d+)' is incomplete \((\d+) of 33554432 bytes\)$/.exec(line);
      expect([line, m !== null]).toEqual([line, true]);
      incomplete.add(m![1]);
    }
    withLoop(image, (mnt) => {
      for (const name of fs.existsSync(join(mnt, 'long')) ? fs.readdirSync(join(mnt, 'long')) : []) {
        const size = fs.statSync(join(mnt, 'long', name)).size;
        expect([name, size < 32 << 20]).toEqual([name, incomplete.has(`/long/${name}`)]);
      }
    });
  });

  test('hard links of every kind stay links, also over an earlier copy', () => {
    const src = join(work, 'links');
    fs.mkdirSync(src, { recursive: true });
    fs.writeFileSync(join(src, 'a'), 'x');
    fs.linkSync(join(src, 'a'), join(src, 'b'));
    run('mkfifo', [join(src, 'p')]);
    fs.linkSync(join(src, 'p'), join(src, 'p2'));
    fs.symlinkSync('a', join(src, 's'));
    fs.linkSync(join(src, 's'), join(src, 's2'));
    const image = freshImage('links.img', 64 << 20);
    expectSuccess(cli('cptofs', ['-i', image, src, '/']));
    const again = cli('cptofs', ['-i', image, src, '/']);
    expect(again.stderr).toBe('');
    expectSuccess(again);
    run('e2fsck', ['-fn', image]);
    withLoop(image, (mnt) => {
      const ino = (name: string) => fs.lstatSync(join(mnt, 'links', name)).ino;
      expect(ino('b')).toBe(ino('a'));
      expect(ino('p2')).toBe(ino('p'));
      expect(ino('s2')).toBe(ino('s'));
    });
  });

  test('a file over an existing one is written in place, as cp does: its other names see the new data', () => {
    const src = join(work, 'inplace');
    fs.rmSync(src, { recursive: true, force: true });
    fs.mkdirSync(src);
    fs.writeFileSync(join(src, 'big'), Buffer.alloc(1 << 20, 1));
    fs.linkSync(join(src, 'big'), join(src, 'big2'));
    fs.writeFileSync(join(src, 'small'), 'old');
    fs.linkSync(join(src, 'small'), join(src, 'small2'));
    const image = freshImage('inplace.img', 64 << 20);
    expectSuccess(cli('cptofs', ['-i', image, src, '/']));
    const newBig = join(work, 'new-big');
    fs.writeFileSync(newBig, Buffer.alloc(600 << 10, 2));
    const newSmall = join(work, 'new-small');
    fs.writeFileSync(newSmall, 'new');
    fs.chmodSync(newSmall, 0o750); // the old one is 644: the new mode comes too, as with cp -a
    for (const [from, to] of [[newBig, '/inplace/big'], [newSmall, '/inplace/small']]) {
      const r = cli('cptofs', ['-i', image, from, to]);
      expect(r.stderr).toBe('');
      expectSuccess(r);
    }
    run('e2fsck', ['-fn', image]);
    withLoop(image, (mnt) => {
      const at = (name: string) => join(mnt, 'inplace', name);
      expect(fs.statSync(at('big2')).ino).toBe(fs.statSync(at('big')).ino);
      expect(sum(at('big2'))).toBe(sum(newBig));
      expect(fs.readFileSync(at('small2'), 'utf8')).toBe('new');
      expect(fs.statSync(at('small')).mode & 0o7777).toBe(0o750);
    });
    // Without the source's mode, a file written over keeps its own, as with cp.
    fs.chmodSync(newSmall, 0o600);
    expectSuccess(cli('cptofs', ['-i', image, '--no-preserve=mode', newSmall, '/inplace/small']));
    withLoop(image, (mnt) => expect(fs.statSync(join(mnt, 'inplace/small')).mode & 0o7777).toBe(0o750));
    // And out: a host file with a second name gets the image's data in place.
    const out = join(work, 'inplace-out');
    fs.rmSync(out, { recursive: true, force: true });
    fs.mkdirSync(out);
    fs.writeFileSync(join(out, 'x'), 'something longer than new');
    fs.chmodSync(join(out, 'x'), 0o600);
    fs.linkSync(join(out, 'x'), join(out, 'x2'));
    expectSuccess(cli('cpfromfs', ['-i', image, '/inplace/small', join(out, 'x')]));
    expect(fs.readFileSync(join(out, 'x2'), 'utf8')).toBe('new');
    expect(fs.statSync(join(out, 'x2')).mode & 0o7777).toBe(0o750);

    // Two sources onto two names of one file: written once in place, then
    // the second name gets its own file; neither is a mix of both.
    fs.rmSync(join(src, 'big2'));
    fs.writeFileSync(join(src, 'big2'), Buffer.alloc(300 << 10, 3));
    const again = cli('cptofs', ['-i', image, src, '/']);
    expect(again.stderr).toBe('');
    withLoop(image, (mnt) => {
      expect(sum(join(mnt, 'inplace', 'big'))).toBe(sum(join(src, 'big')));
      expect(sum(join(mnt, 'inplace', 'big2'))).toBe(sum(join(src, 'big2')));
    });
  });

  test('what the host has mounted of an image is refused for writing: the same file by any path, per partition', () => {
    const image = join(work, 'hosted.img');
    fs.rmSync(image, { force: true });
    fs.writeFileSync(image, '');
    fs.truncateSync(image, 64 << 20);
    execFileSync('sfdisk', ['-q', image], { input: 'label: gpt\n,24M\n,\n' });
    const parts = JSON.parse(run('sfdisk', ['-J', image])).partitiontable.partitions as { start: number; size: number }[];
    // Each partition through a loop device with an offset (mount -o loop,offset=),
    // made through a bind mount's path: the same file by another name.
    const bound = join(work, 'hosted-bind');
    const mnt = join(work, 'hosted-mnt');
    fs.mkdirSync(bound, { recursive: true });
    fs.mkdirSync(mnt, { recursive: true });
    run('mount', ['--bind', work, bound]);
    const loops = parts.map((p) =>
      run('losetup', ['-f', '--show', '-o', String(p.start * 512), '--sizelimit', String(p.size * 512), join(bound, 'hosted.img')]).trim(),
    );
    const file = join(work, 'hosted-file');
    fs.writeFileSync(file, 'x');
    try {
      for (const loop of loops) run('mkfs.ext4', ['-q', loop]);
      // Partition 2 mounted by the host, through a device node of another name.
      const node = join(work, 'hosted-node');
      fs.rmSync(node, { force: true });
      const [major, minor] = fs.readFileSync(`/sys/class/block/${loops[1].slice(5)}/dev`, 'utf8').trim().split(':');
      run('mknod', [node, 'b', major, minor]);
      run('mount', [node, mnt]);
      try {
        // Partition 1 is free to write; partition 2 and the whole disk are not.
        expect(cli('cptofs', ['-i', image, '-P', '1', file, '/']).stderr).toBe('');
        const r = cli('cptofs', ['-i', image, '-P', '2', file, '/']);
        expect(r.status).toBe(2);
        expect(r.stderr).toMatch(new RegExp(`hosted\\.img partition 2: mounted by the host on ${mnt} \\(${loops[1]}; EBUSY\\)`));
        // Reading it is allowed, with a warning: the host's writes may not be there yet.
        const read = cli('cpfromfs', ['-i', image, '-P', '2', '/lost+found', join(work, 'hosted-out')]);
        expectSuccess(read);
        // The host's journal is live: not replayed here, and said so too.
        expect(read.stderr).toBe(
          `cpfromfs: warning: ${image} partition 2: mounted read-write by the host on ${mnt}: what it has not written yet is not seen here\n` +
            `cpfromfs: warning: ${image} partition 2: its ext4 journal needs replaying, which a read-only mount cannot do: ` +
            'shown without what the journal holds (the latest changes); mount it read-write, or fsck it, to see them\n',
        );
        // Partition 1, which the host has not mounted: nothing to say.
        expect(cli('cpfromfs', ['-i', image, '-P', '1', '/lost+found', join(work, 'hosted-out-1')]).stderr).toBe('');
      } finally {
        run('umount', [mnt]);
      }
    } finally {
      for (const loop of loops) run('losetup', ['-d', loop]);
      run('umount', [bound]);
    }
  });

  test('two sources landing on one name: the second is refused, as cp does; never a mix of both', () => {
    const x = join(work, 'land-x');
    const y = join(work, 'land-y');
    for (const [dir, text] of [[x, 'from x'], [y, 'from y']]) {
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(join(dir, 'f'), text);
    }
    const image = freshImage('land.img', 64 << 20);
    for (let round = 0; round < 2; round++) { // onto a new name, then onto one already there
      const r = cli('cptofs', ['-i', image, join(x, 'f'), join(y, 'f'), '/']);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/cannot copy '.*land-y\/f' to '\/f': this copy has just written a file there, from another source/);
    }
    withLoop(image, (mnt) => expect(fs.readFileSync(join(mnt, 'f'), 'utf8')).toBe('from x'));

    // Two names of one file, landing on one name: it is that file, nothing lost.
    const z = join(work, 'land-z');
    fs.mkdirSync(z, { recursive: true });
    fs.rmSync(join(z, 'g'), { force: true });
    fs.linkSync(join(x, 'f'), join(z, 'g'));
    fs.rmSync(join(z, 'f'), { force: true });
    fs.linkSync(join(x, 'f'), join(z, 'f'));
    const intoDir = cli('cptofs', ['-i', image, join(x, 'f'), join(z, 'f'), '/']);
    expect(intoDir.stderr).toBe('');
    expectSuccess(intoDir);
    withLoop(image, (mnt) => expect(fs.readFileSync(join(mnt, 'f'), 'utf8')).toBe('from x'));
    // Out, over a file of the user's: kept, as the first source's copy.
    const out = join(work, 'land-out');
    fs.rmSync(out, { recursive: true, force: true });
    fs.mkdirSync(out);
    fs.writeFileSync(join(out, 'f'), 'old');
    expect(cli('cpfromfs', ['-i', image, '/f', '/f', out]).stderr).toMatch(/just written a file there/);
    expect(fs.readFileSync(join(out, 'f'), 'utf8')).toBe('from x');

    // On vfat, A and a are one name: copied at once, they must not interleave.
    const cases = join(work, 'land-cases');
    fs.mkdirSync(cases, { recursive: true });
    fs.writeFileSync(join(cases, 'A'), Buffer.alloc(12 << 20, 0x41));
    fs.writeFileSync(join(cases, 'a'), Buffer.alloc(12 << 20, 0x61));
    const fat = join(work, 'land-fat.img');
    fs.rmSync(fat, { force: true });
    fs.writeFileSync(fat, '');
    fs.truncateSync(fat, 128 << 20);
    run('mkfs.vfat', ['-F', '32', fat]);
    const r = cli('cptofs', ['-i', fat, cases, '/']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/this copy has just written a file there, from another source/);
    run('fsck.vfat', ['-n', fat]);
    // This host has no vfat driver: read back with the kernel's own.
    const back = join(work, 'land-back');
    fs.rmSync(back, { recursive: true, force: true });
    expectSuccess(cli('cpfromfs', ['-i', fat, '/land-cases', back]));
    const names = fs.readdirSync(back);
    expect(names).toHaveLength(1);
    const data = fs.readFileSync(join(back, names[0]));
    expect(data.length).toBe(12 << 20);
    expect(data.every((b) => b === data[0])).toBe(true);
  });

  test('two writers of one image at once: the second waits for the first, both succeed', async () => {
    const image = freshImage('two-writers.img', 64 << 20);
    const file = join(work, 'two-writers-file');
    fs.writeFileSync(file, Buffer.alloc(4 << 20, 1));
    const copy = (dest: string) =>
      new Promise<{ status: number | null; stderr: string }>((done) => {
        const child = spawn(process.execPath, [bin('cptofs'), '-i', image, file, dest], { stdio: ['ignore', 'ignore', 'pipe'] });
        let stderr = '';
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        child.once('exit', (status) => done({ status, stderr }));
      });
    for (const r of await Promise.all([copy('/a'), copy('/b')])) expect(r).toEqual({ status: 0, stderr: '' });
    run('e2fsck', ['-fn', image]);
  });

  test('cpfromfs never overwrites nor replaces the image it reads', () => {
    const image = freshImage('self.img', 64 << 20);
    const small = join(work, 'self-small');
    fs.writeFileSync(small, 'a file named as the image');
    expectSuccess(cli('cptofs', ['-i', image, small, '/self.img']));
    const before = sum(image);
    const out = join(work, 'self-out');
    fs.rmSync(out, { recursive: true, force: true });
    fs.mkdirSync(out);
    fs.linkSync(image, join(out, 'self.img'));
    for (const dest of [join(out, 'self.img'), image]) {
      const r = cli('cpfromfs', ['-i', image, '/self.img', dest]);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/self\.img' is the image being read: not overwritten/);
      expect(sum(image)).toBe(before);
    }
  });

  test('a dangling symlink goes in as one; .. does not leave the image; cpfromfs of / copies its contents', () => {
    const dangling = join(work, 'dangling');
    fs.rmSync(dangling, { force: true });
    fs.symlinkSync('/nowhere/at/all', dangling);
    const file = join(work, 'plain.txt');
    fs.writeFileSync(file, 'plain');
    const image = freshImage('paths.img', 64 << 20);
    expectSuccess(cli('cptofs', ['-i', image, dangling, '/']));
    expectSuccess(cli('cptofs', ['-i', image, file, '../../escaped.txt']));
    const out = join(work, 'root-out');
    fs.rmSync(out, { recursive: true, force: true });
    fs.mkdirSync(out);
    expectSuccess(cli('cpfromfs', ['-i', image, '/', out]));
    expect(fs.readlinkSync(join(out, 'dangling'))).toBe('/nowhere/at/all');
    expect(fs.readFileSync(join(out, 'escaped.txt'), 'utf8')).toBe('plain');
    expect(fs.readdirSync(out).sort()).toEqual(['dangling', 'escaped.txt', 'lost+found']);
  });

  test('symlinks on the way to a path resolve inside the image, absolute ones too', () => {
    const src = join(work, 'chroot-src');
    fs.rmSync(src, { recursive: true, force: true });
    fs.mkdirSync(join(src, 'run'), { recursive: true });
    fs.mkdirSync(join(src, 'var'));
    fs.mkdirSync(join(src, 'usr/lib'), { recursive: true });
    fs.symlinkSync('/run', join(src, 'var/run')); // absolute, as in a Debian root
    fs.symlinkSync('usr/lib', join(src, 'lib'));
    const image = join(work, 'chroot.img');
    fs.rmSync(image, { force: true });
    run('mke2fs', ['-q', '-t', 'ext4', '-d', src, image, '32M']);
    const file = join(work, 'pid.txt');
    fs.writeFileSync(file, '42');
    expectSuccess(cli('cptofs', ['-i', image, file, '/var/run/']));
    expectSuccess(cli('cptofs', ['-i', image, file, '/lib'])); // a symlink to a directory: into it
    const out = join(work, 'chroot-out');
    fs.rmSync(out, { recursive: true, force: true });
    fs.mkdirSync(out);
    expectSuccess(cli('cpfromfs', ['-i', image, '/var/run/pid.txt', '/lib', out]));
    expect(fs.readFileSync(join(out, 'pid.txt'), 'utf8')).toBe('42');
    expect(fs.readlinkSync(join(out, 'lib'))).toBe('usr/lib'); // a source symlink stays one
    run('e2fsck', ['-fn', image]);
    withLoop(image, (mnt) => {
      expect(fs.readFileSync(join(mnt, 'run/pid.txt'), 'utf8')).toBe('42');
      expect(fs.readFileSync(join(mnt, 'usr/lib/pid.txt'), 'utf8')).toBe('42');
      expect(fs.lstatSync(join(mnt, 'lib')).isSymbolicLink()).toBe(true);
    });
  });

  test('--exclude a/b matches a/b at any depth, /a/b from the top of what is copied, also for .', () => {
    const src = join(work, 'exs');
    for (const d of ['a', 'x/a']) fs.mkdirSync(join(src, d), { recursive: true });
    for (const f of ['a/b', 'a/c', 'x/a/b']) fs.writeFileSync(join(src, f), f);
    const image = freshImage('exclude.img', 64 << 20);
    const copy = (dest: string, pattern: string, source: string) => {
      const r = spawnSync(process.execPath, [bin('cptofs'), '-i', image, '--exclude', pattern, source, dest], { cwd: src, encoding: 'utf8' });
      expectSuccess(r);
    };
    run('debugfs', ['-w', '-R', 'mkdir /dot-any', image]);
    copy('/dot-any', 'a/b', '.');
    run('debugfs', ['-w', '-R', 'mkdir /dot-top', image]);
    copy('/dot-top', '/a/b', '.');
    copy('/named-top', '/a/b', src); // the top is exs itself: /exs/a/b would be it
    copy('/named-top-2', '/exs/a/b', src);
    withLoop(image, (mnt) => {
      const has = (path: string) => fs.existsSync(join(mnt, path));
      expect(['dot-any/a/b', 'dot-any/x/a/b', 'dot-any/a/c'].map(has)).toEqual([false, false, true]);
      expect(['dot-top/a/b', 'dot-top/x/a/b'].map(has)).toEqual([false, true]);
      expect(['named-top/a/b', 'named-top-2/a/b', 'named-top-2/x/a/b'].map(has)).toEqual([true, false, true]);
    });
  });

  test('dir/. copies what is in dir, as cp -a dir/. dest does', () => {
    const image = freshImage('dot.img', 64 << 20);
    const r = spawnSync(process.execPath, [bin('cptofs'), '-i', image, '.', '/'], { cwd: tree, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expectSuccess(r);
    withLoop(image, (mnt) => expect(fs.existsSync(join(mnt, 'file'))).toBe(true));
  });

  test('a file to \'dest/\' that is not a directory: Not a directory, exit 1', () => {
    const image = freshImage('slash.img', 64 << 20);
    const r = cli('cptofs', ['-i', image, join(tree, 'file'), '/newname/']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/cannot copy '.*file' to '\/newname\/': Not a directory/);
  });

  /* A directory made anew, empty. */
  const emptyDir = (name: string) => {
    const dir = join(work, name);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir);
    return dir;
  };
  /* Files, a directory, a symlink to it, a dangling symlink, and a name with glob characters. */
  const linksAndOddNames = (name: string) => {
    const dir = emptyDir(name);
    fs.mkdirSync(join(dir, 'd'));
    fs.mkdirSync(join(dir, 'gl'));
    for (const file of ['f', 'x', 'd/in', 'gl/a[1]']) fs.writeFileSync(join(dir, file), file);
    fs.symlinkSync('d', join(dir, 'dl'));
    fs.symlinkSync('/nowhere', join(dir, 'up'));
    return dir;
  };
  const imageOf = (src: string) => {
    const image = `${src}.img`;
    fs.rmSync(image, { force: true });
    run('mke2fs', ['-q', '-t', 'ext4', '-d', src, image, '32M']);
    return image;
  };

  test("'' names nothing: as a source it is not found, the rest copied (exit 1); as the destination nothing is copied (exit 2)", () => {
    const image = freshImage('empty-arg.img', 64 << 20);
    // Run where '' would be taken for '.', with something to copy.
    const into = (args: string[]) => spawnSync(process.execPath, [bin('cptofs'), '-i', image, ...args], { cwd: tree, encoding: 'utf8' });
    let r = into(['', 'file', '/']);
    expect([r.status, r.stderr]).toEqual([1, "cptofs: cannot stat '': No such file or directory\n"]);
    r = into(['empty', '']);
    expect([r.status, r.stderr]).toEqual([2, "cptofs: cannot copy to '': No such file or directory\n"]);
    withLoop(image, (mnt) => expect(fs.readdirSync(mnt).sort()).toEqual(['file', 'lost+found']));

    const out = emptyDir('empty-arg-out');
    const outOf = (args: string[]) => spawnSync(process.execPath, [bin('cpfromfs'), '-i', image, ...args], { cwd: out, encoding: 'utf8' });
    r = outOf(['/file', '']);
    expect([r.status, r.stderr]).toEqual([2, "cpfromfs: cannot copy to '': No such file or directory\n"]);
    expect(fs.readdirSync(out)).toEqual([]);
    r = outOf(['', '/file', '.']);
    expect([r.status, r.stderr]).toEqual([1, "cpfromfs: cannot stat '': No such file or directory\n"]);
    expect(fs.readdirSync(out)).toEqual(['file']);
  });

  test('cpfromfs: a source whose parent is missing, a dangling symlink or a file fails alone, named as given (exit 1)', () => {
    const image = imageOf(linksAndOddNames('missing-parent'));
    const out = emptyDir('missing-parent-out');
    const r = cli('cpfromfs', ['-i', image, '/f', '/nodir/file', '/up/passwd', '/f/x', '/x', out]);
    expect(r.status).toBe(1);
    expect(r.stderr.split('\n')).toEqual([
      "cpfromfs: cannot stat '/nodir/file': No such file or directory",
      "cpfromfs: cannot stat '/up/passwd': No such file or directory",
      "cpfromfs: cannot stat '/f/x': Not a directory",
      '',
    ]);
    expect(fs.readdirSync(out).sort()).toEqual(['f', 'x']);
  });

  test('cpfromfs: a pattern that matches nothing is a name, as in bash: a[1] copies the file a[1]', () => {
    const image = imageOf(linksAndOddNames('literal-glob'));
    const out = emptyDir('literal-glob-out');
    const r = cli('cpfromfs', ['-i', image, '/gl/a[1]', '/gl/b[1]', out]);
    expect([r.status, r.stderr]).toEqual([1, "cpfromfs: no match in the image for '/gl/b[1]'\n"]);
    expect(fs.readdirSync(out)).toEqual(['a[1]']);
  });

  test('a trailing slash: on a file, Not a directory (exit 1); on a symlink to a directory, the directory is copied', () => {
    const src = linksAndOddNames('trailing-slash');
    const image = freshImage('trailing-slash-in.img', 64 << 20);
    let r = cli('cptofs', ['-i', image, ...['f/', 'up/', 'dl/'].map((p) => join(src, p)), '/']);
    expect(r.status).toBe(1);
    expect(r.stderr.split('\n')).toEqual([
      `cptofs: cannot stat '${src}/f/': Not a directory`,
      `cptofs: cannot stat '${src}/up/': No such file or directory`,
      '',
    ]);
    withLoop(image, (mnt) => {
      expect(fs.readdirSync(mnt).sort()).toEqual(['dl', 'lost+found']);
      expect(fs.readdirSync(join(mnt, 'dl'))).toEqual(['in']); // a directory, not the link
    });

    const out = emptyDir('trailing-slash-out');
    r = cli('cpfromfs', ['-i', imageOf(src), '/f/', '/up/', '/dl/', out]);
    expect(r.status).toBe(1);
    expect(r.stderr.split('\n')).toEqual([
      "cpfromfs: cannot stat '/f/': Not a directory",
      "cpfromfs: cannot stat '/up/': No such file or directory",
      '',
    ]);
    expect(fs.readdirSync(out)).toEqual(['dl']);
    expect(fs.readdirSync(join(out, 'dl'))).toEqual(['in']);
  });

  test('names and link targets that are not UTF-8 go in and come out byte for byte', () => {
    const src = join(work, 'bytes');
    fs.rmSync(src, { recursive: true, force: true });
    fs.mkdirSync(src);
    makeByteNames(src);
    const image = freshImage('bytes.img', 64 << 20);
    const into = cli('cptofs', ['-i', image, src, '/']);
    expect(into.stderr).toBe('');
    expectSuccess(into);
    run('e2fsck', ['-fn', image]);
    const want = byteNames(src);
    const out = join(work, 'bytes-out');
    fs.rmSync(out, { recursive: true, force: true });
    fs.mkdirSync(out);
    const back = cli('cpfromfs', ['-i', image, '/bytes', out]);
    expect(back.stderr).toBe('');
    expectSuccess(back);
    expect(byteNames(join(out, 'bytes'))).toBe(want);
    withLoop(image, (mnt) => expect(byteNames(join(mnt, 'bytes'))).toBe(want));
  });

  test('cpfromfs reads an image whose journal still needs replaying, and says what it cannot show', () => {
    const image = freshImage('journal.img', 64 << 20);
    const copy = join(work, 'journal-copy.img');
    copyNeedingRecovery(image, copy);
    const out = join(work, 'journal-out');
    fs.rmSync(out, { recursive: true, force: true });
    fs.mkdirSync(out);
    const r = cli('cpfromfs', ['-i', copy, '/f', out]);
    expect(r.stderr).toBe(
      `cpfromfs: warning: ${copy}: its ext4 journal needs replaying, which a read-only mount cannot do: ` +
        'shown without what the journal holds (the latest changes); mount it read-write, or fsck it, to see them\n',
    );
    expectSuccess(r);
    expect(fs.readFileSync(join(out, 'f'), 'utf8')).toBe('in the image');
  });

  test('--create whose mkfs fails leaves no image behind', () => {
    const image = join(work, 'too-small.img');
    fs.rmSync(image, { force: true });
    const r = cli('cptofs', ['-i', image, '-t', 'xfs', '--create', '16M', join(tree, 'file'), '/']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/mkfs\.xfs failed/);
    expect(fs.existsSync(image)).toBe(false);
    // A type the kernel only reads is made from a tree: said so, before mkfs.
    const squash = cli('cptofs', ['-i', image, '-t', 'squashfs', '--create', '16M', join(tree, 'file'), '/']);
    expect(squash.status).toBe(2);
    expect(squash.stderr).toMatch(/the kernel only reads squashfs, made from a tree \(mksquashfs DIR IMAGE\), not empty/);
    expect(fs.existsSync(image)).toBe(false);
  });

  test('-t ntfs is the kernel\'s ntfs3, for --create too', () => {
    const image = join(work, 'created.ntfs');
    fs.rmSync(image, { force: true });
    expectSuccess(cli('cptofs', ['-i', image, '-t', 'ntfs', '--create', '32M', join(tree, 'file'), '/']));
    const out = join(work, 'ntfs-out');
    fs.rmSync(out, { recursive: true, force: true });
    expectSuccess(cli('cpfromfs', ['-i', image, '-t', 'ntfs', '--no-preserve=xattr', '/file', out]));
    expect(fs.readFileSync(out).equals(fs.readFileSync(join(tree, 'file')))).toBe(true);
  });
});
