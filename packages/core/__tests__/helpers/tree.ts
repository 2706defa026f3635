// The metadata tree the cptofs and fs2tar tests share: every kind of entry
// cp -a and tar must keep, and a survey of a tree to compare two copies by.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { host } from '../../src';
import { run, tempDir } from './images';

const NS = 1_000_000_000n;
const LONG_NAME = 'n'.repeat(255);
const UTF8_NAME = 'ünïcødé-名前-😀';
// A file capability (VFS_CAP_REVISION_2): cap_net_bind_service, permitted.
const CAPABILITY = Buffer.from('0000000200040000000000000000000000000000', 'hex');

/** Makes the metadata tree on the host, under dir/tree. */
export function makeTree(dir: string): string {
  const t = join(dir, 'tree');
  fs.mkdirSync(t);
  fs.writeFileSync(join(t, 'file'), 'some text\n');
  fs.writeFileSync(join(t, 'empty'), '');
  const sparse = fs.openSync(join(t, 'sparse'), 'w');
  fs.writeSync(sparse, Buffer.alloc(65536, 1), 0, 65536, 0);
  fs.writeSync(sparse, Buffer.alloc(65536, 2), 0, 65536, 9 << 20);
  fs.ftruncateSync(sparse, 12 << 20);
  fs.closeSync(sparse);
  fs.writeFileSync(join(t, 'setuid'), '#!/bin/true\n');
  fs.chmodSync(join(t, 'setuid'), 0o4755);
  host.setxattr(join(t, 'setuid'), 'security.capability', CAPABILITY);
  fs.writeFileSync(join(t, 'mode000'), 'secret');
  fs.chmodSync(join(t, 'mode000'), 0o000);
  fs.mkdirSync(join(t, 'sticky'));
  fs.chmodSync(join(t, 'sticky'), 0o1777);
  fs.writeFileSync(join(t, 'owned'), 'mine');
  fs.chownSync(join(t, 'owned'), 1234, 5678);
  fs.writeFileSync(join(t, LONG_NAME), 'long');
  fs.writeFileSync(join(t, UTF8_NAME), 'utf-8');
  fs.symlinkSync('file', join(t, 'relative-link'));
  fs.symlinkSync('/etc/passwd', join(t, 'absolute-link'));
  fs.symlinkSync('nowhere', join(t, 'dangling-link'));
  fs.writeFileSync(join(t, 'hard1'), 'linked');
  fs.linkSync(join(t, 'hard1'), join(t, 'hard2'));
  fs.mkdirSync(join(t, 'sub/deeper'), { recursive: true });
  fs.writeFileSync(join(t, 'sub/deeper/leaf'), 'leaf');
  fs.linkSync(join(t, 'hard1'), join(t, 'sub/hard3'));
  run('mkfifo', [join(t, 'fifo')]);
  host.mknod(join(t, 'null'), fs.constants.S_IFCHR | 0o666, (1 << 8) | 3);
  host.mknod(join(t, 'socket'), fs.constants.S_IFSOCK | 0o755, 0);
  host.setxattr(join(t, 'file'), 'user.colour', Buffer.from('blue'));
  host.setxattr(join(t, 'file'), 'trusted.note', Buffer.from('root only'));
  host.setxattr(join(t, 'sub'), 'user.dir', Buffer.from('on a directory'));
  // Nanosecond times in the past, on everything, directories last.
  const walk = (p: string): string[] =>
    fs.lstatSync(p).isDirectory() ? [...fs.readdirSync(p).flatMap((n) => walk(join(p, n))), p] : [p];
  let i = 0;
  for (const p of walk(t)) {
    const when = 1_000_000_000n * NS + BigInt(i++) * 1_000_000_007n + 123n;
    host.utimens(p, when, when + 1n);
  }
  return t;
}

export interface Seen {
  type: number;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  rdev: number;
  mtimeNs: string;
  content?: string;
  link?: string;
  xattrs: Record<string, string>;
  sparse?: boolean;
}

/** Everything cp -a keeps, for every entry under root; hard links as groups. */
export function survey(root: string, opts: { owners?: boolean; times?: boolean } = {}): { entries: Record<string, Seen>; links: string[][] } {
  const entries: Record<string, Seen> = {};
  const inodes = new Map<bigint, string[]>();
  const visit = (rel: string) => {
    const p = rel ? join(root, rel) : root;
    const st = fs.lstatSync(p, { bigint: true });
    const xattrs: Record<string, string> = {};
    for (const name of host.listxattr(p).sort()) xattrs[name] = host.getxattr(p, name).toString('hex');
    const seen: Seen = {
      type: Number(st.mode) & 0o170000,
      mode: Number(st.mode) & 0o7777,
      uid: opts.owners === false ? 0 : Number(st.uid),
      gid: opts.owners === false ? 0 : Number(st.gid),
      size: st.isDirectory() ? 0 : Number(st.size),
      rdev: Number(st.rdev),
      mtimeNs: opts.times === false || st.isSymbolicLink() ? '' : String(st.mtimeNs),
      xattrs,
    };
    if (st.isFile()) {
      seen.content = createHash('sha256').update(fs.readFileSync(p)).digest('hex');
      seen.sparse = Number(st.blocks) * 512 < Number(st.size);
      if (st.nlink > 1n) inodes.set(st.ino, [...(inodes.get(st.ino) ?? []), rel]);
    }
    if (st.isSymbolicLink()) seen.link = fs.readlinkSync(p);
    if (rel) entries[rel] = seen;
    if (st.isDirectory()) for (const n of fs.readdirSync(p).sort()) visit(rel ? `${rel}/${n}` : n);
  };
  visit('');
  return { entries, links: [...inodes.values()].map((g) => g.sort()).sort() };
}

export function withLoop<T>(image: string, fn: (mnt: string) => T): T {
  const mnt = tempDir('lkl-um-cptofs-mnt-');
  run('mount', ['-o', 'loop,ro', image, mnt]);
  try {
    return fn(mnt);
  } finally {
    run('umount', [mnt]);
    fs.rmdirSync(mnt);
  }
}

/*
 * A tree whose names and link target are not UTF-8: a latin1 directory
 * name, a name with a byte 0xfe, a symlink to bytes 0xff 0xfe.
 */
export function makeByteNames(dir: string): void {
  run('python3', [
    '-c',
    `import os,sys
d = sys.argv[1].encode()
os.makedirs(d + b'/d\\xe9j\\xe0')
open(d + b'/bad\\xfename', 'w').write('x')
open(d + b'/d\\xe9j\\xe0/inner', 'w').write('y')
os.symlink(b'target\\xff\\xfe', d + b'/lnk')`,
    dir,
  ]);
}

/** What makeByteNames() made, as bytes, to compare one copy with another. */
export function byteNames(dir: string): string {
  return run('python3', [
    '-c',
    `import os,sys
d = sys.argv[1].encode()
print(sorted(n for n in os.listdir(d) if n != b'lost+found'), os.readlink(d + b'/lnk'), os.listdir(d + b'/d\\xe9j\\xe0'))`,
    dir,
  ]);
}

/*
 * Copies an ext4 image to `copy` while the host has it mounted with a file
 * 'f' just written: the copy's journal still needs replaying, as after a
 * crash.
 */
export function copyNeedingRecovery(image: string, copy: string): void {
  const mnt = tempDir('lkl-um-journal-');
  run('mount', ['-o', 'loop', image, mnt]);
  try {
    fs.writeFileSync(join(mnt, 'f'), 'in the image');
    run('sync', []);
    fs.copyFileSync(image, copy);
  } finally {
    run('umount', [mnt]);
    fs.rmdirSync(mnt);
  }
  if (!/needs_recovery/.test(run('dumpe2fs', ['-h', copy]))) throw new Error(`${copy}: the journal was replayed already`);
}
