// cptofs and cpfromfs, run as the commands they are, on real images: a tree
// of every kind of entry goes in, is checked through a host loop mount
// entry by entry (stat and xattrs), comes back out, and is checked again.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { host } from '@lkl-um/core';
import { FILESYSTEMS, isRoot, run, tempDir } from '../../core/__tests__/helpers/images';
import { makeTree, survey, withLoop } from '../../core/__tests__/helpers/tree';

jest.setTimeout(300_000);

const bin = (name: string) => join(__dirname, '../bin', `${name}.js`);

function cli(name: 'cptofs' | 'cpfromfs', args: string[]) {
  const r = spawnSync(process.execPath, [bin(name), ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
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
    expect(into.status).toBe(0);
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
    expect(back.status).toBe(0);
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
  expect(into.status).toBe(0);
  expect(into.stderr).toMatch(/warning: the image cannot keep owners/);
  expect(into.stderr).toMatch(/warning: the image cannot hold symbolic links/);
  expect(into.stderr).toMatch(/warning: the image cannot hold FIFOs, sockets or devices/);
  expect(into.stderr).toMatch(/warning: the image cannot keep hard links: copying them as files/);
  run('fsck.vfat', ['-n', image]);

  const out = join(work, 'out-vfat');
  fs.mkdirSync(out);
  expect(cli('cpfromfs', ['-i', image, '--no-preserve=ownership', '/tree', out]).status).toBe(0);
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
    expect(r.status).toBe(0);
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
    expect(cli('cptofs', ['-i', fresh, '-t', 'ext4', '--create', '32M', join(tree, 'file'), '/']).status).toBe(0);
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
    expect(cli('cptofs', ['-i', parted, '-P', '2', join(tree, 'file'), '/']).status).toBe(0);
    const out = join(work, 'from-p2');
    expect(cli('cpfromfs', ['-i', parted, '-P', '2', '/file', out]).status).toBe(0);
    expect(fs.readFileSync(out, 'utf8')).toBe('some text\n');
  });

  test('cpfromfs expands a quoted glob inside the image, and never modifies it', () => {
    expect(cli('cptofs', ['-i', image, tree, '/']).status).toBe(0);
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
    expect(help.status).toBe(0);
    for (const o of ['-i', '-t', '-P', '-o', '-g', '-s', '-m', '-p', '--no-preserve', '--exclude', '-v', '-q', '--create', 'Examples:']) {
      expect(help.stdout).toContain(o);
    }
    expect(cli('cpfromfs', ['--version']).stdout).toMatch(/cpfromfs \S+ \(lkl-um; Linux 6\.12/);
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
    expect(r.stderr).toMatch(/ENOENT.*missing\.img/);
    expect(r.stderr).not.toMatch(/ at /);
    r = cli('cptofs', ['-i', image, '-t', 'xfs', tree, '/']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/as xfs/);
    r = cli('cptofs', ['-i', image, join(tree, 'file'), join(tree, 'empty'), '/file-does-not-exist']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/is not a directory/);
    r = cli('cptofs', ['-i', image]);
    expect(r.status).toBe(2);
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

  test('a read-only image: a clear error', () => {
    run('chattr', ['+i', image]);
    try {
      const r = cli('cptofs', ['-i', image, join(tree, 'file'), '/']);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/read-only/);
      // cpfromfs only reads: fine.
      const out = join(work, 'ro-out');
      expect(cli('cpfromfs', ['-i', image, '/lost+found', out]).status).toBe(0);
    } finally {
      run('chattr', ['-i', image]);
    }
  });
});
