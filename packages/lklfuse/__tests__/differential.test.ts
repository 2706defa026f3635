// lklfuse against the host kernel: one seeded random sequence of file
// operations is applied both to an lklfuse mount of an image and to the
// host's loop mount of an identical copy; every operation must end the same
// way on both (the same error code, or the same data), and the two trees
// must end the same.  Then lklfuse's image must be fsck-clean and hold, read
// by the host, what the host's own mount holds.
//
// With allow_other, each operation is made by one of three users (root and
// two others sharing a group), switched to for it (seteuid): the host's
// permission checks, ownership of what each makes, chown and chgrp.
//
// vfat, exfat and f2fs, which the host here cannot mount, run a sequence on
// lklfuse alone: no broken-mount errors, and the image, mounted afresh,
// holds what the mount showed.
//
// A failure names the seed and the operation's index; to replay it:
//   LKL_UM_DIFF_SEED=<seed> LKL_UM_DIFF_OPS=<index + 1> npx jest packages/lklfuse/__tests__/differential.test.ts -t <type>
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { host } from '../../core/src';
import { filesystem, isRoot, run, tempDir } from '../../core/__tests__/helpers/images';
import { survey, withLoop } from '../../core/__tests__/helpers/tree';

const lklfuse = join(__dirname, '../bin/lklfuse.js');

/* A constant per filesystem, so that each runs a sequence of its own; LKL_UM_DIFF_SEED overrides them all, to replay a failure. */
const DEFAULT_SEEDS: Record<string, number> = { ext4: 0xe47, xfs: 0x5f5, btrfs: 0xb7f5 };
/* Added to a filesystem's seed for a row with options, so that each row has a sequence of its own. */
const OPTION_SEEDS: Record<string, number> = { '': 0, writeback_cache: 1, allow_other: 2 };
const SEED_OVERRIDE = integerFromEnv('LKL_UM_DIFF_SEED');
const OP_COUNT = integerFromEnv('LKL_UM_DIFF_OPS') ?? 5000;
const HISTORY = 10;
/* A row takes 10-40 s here; a slower, busier machine may take several times that. */
const ROW_TIMEOUT_MS = 300_000;
/* Where lklfuse is unmounted and mounted again: fixed, not a share of the op count, so that a shorter replay is the same run up to its end. */
const REMOUNT_AT = 2500;

function integerFromEnv(name: string): number | undefined {
  const text = process.env[name];
  if (text === undefined || text === '') return undefined;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 0) throw new Error(`${name}=${text}: not a whole number`);
  return value;
}

/* --- the random sequence ------------------------------------------------------- */

/* mulberry32: tiny, fast and the same on every machine; uniform in [0, 1). */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Random {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  below(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(choices: readonly T[]): T {
    return choices[this.below(choices.length)]!;
  }
}

/* The bytes a write or an xattr carries: a function of its `fill`, so that an op's description is enough to replay it. */
function bytes(fill: number, length: number): Buffer {
  const next = mulberry32(fill);
  const data = Buffer.alloc(length);
  for (let i = 0; i < length; i += 4) {
    const word = Math.floor(next() * 4294967296);
    for (let j = 0; j < 4 && i + j < length; j++) data[i + j] = (word >>> (8 * j)) & 0xff;
  }
  return data;
}

/*
 * Few names, so that operations collide: a path is now a file, now a
 * directory, now a symlink, and ENOENT, EEXIST, ENOTEMPTY, EISDIR and
 * ENOTDIR come often.
 */
const PATHS = [
  'a', 'b', 'c', 'd', 'e',
  'a/a', 'a/b', 'a/c', 'b/a', 'b/b', 'c/a', 'c/b', 'd/a', 'e/a',
  'a/a/a', 'a/a/b', 'a/b/a', 'b/a/a', 'b/b/b',
  'a/a/a/a',
] as const;
/* Directories are read, too, the mount's root among them. */
const DIRECTORIES = ['', ...PATHS];
/*
 * Relative, and never climbing above the link's own directory (b/.. is
 * that directory): a target that left the mount would lead the two sides
 * to different places.  A link to its own name loops (ELOOP).
 */
const LINK_TARGETS = ['a', 'b', 'c', 'a/b', 'b/a', 'a/a/a', '.', 'b/..', 'missing'];
/* Directories to start with, so that the first files have somewhere to go; later ops may remove them. */
const PROLOGUE: Op[] = ['a', 'b', 'c', 'a/a', 'b/b'].map((path) => ({ kind: 'mkdir', path, mode: 0o755 }));
/* With users: directories anyone may write in, to start with (a mode given to mkdir passes through the umask). */
const USERS_PROLOGUE: Op[] = [
  { kind: 'chmod', path: '', mode: 0o777 },
  ...PROLOGUE.flatMap((mkdir): Op[] => [mkdir, { kind: 'chmod', path: (mkdir as { path: string }).path, mode: 0o777 }]),
];

/* Who makes an operation, with allow_other: root, and two users who share a group besides their own. */
interface User {
  name: string;
  uid: number;
  gid: number;
  groups: number[];
}
const ROOT: User = { name: 'root', uid: 0, gid: 0, groups: [] };
const USERS: User[] = [
  ROOT,
  { name: 'alice', uid: 1000, gid: 1000, groups: [1000, 2000] },
  { name: 'bob', uid: 1001, gid: 1001, groups: [1001, 2000] },
];
/* What chown may be asked for: -1 keeps. */
const OWNERS = [-1, 0, 1000, 1001];
const GROUPS = [-1, 0, 1000, 1001, 2000];
const XATTR_NAMES = ['user.one', 'user.two', 'user.three'];
const SLOTS = 3; // open files held across operations

const KiB = 1024;
const MiB = 1024 * KiB;

type Slot = number;
type Op =
  | { kind: 'open'; slot: Slot; path: string; flags: string[]; mode: number }
  | { kind: 'close'; slot: Slot }
  | { kind: 'pwrite'; slot: Slot; offset: number; length: number; fill: number }
  | { kind: 'pread'; slot: Slot; offset: number; length: number }
  | { kind: 'ftruncate'; slot: Slot; length: number }
  | { kind: 'fstat'; slot: Slot }
  | { kind: 'fsync'; slot: Slot; dataOnly: boolean }
  | { kind: 'writeFile'; path: string; offset: number; length: number; fill: number }
  | { kind: 'readFile'; path: string }
  | { kind: 'truncate'; path: string; length: number }
  | { kind: 'stat'; path: string; follow: boolean }
  | { kind: 'readdir'; path: string }
  | { kind: 'readlink'; path: string }
  | { kind: 'mkdir'; path: string; mode: number }
  | { kind: 'rmdir'; path: string }
  | { kind: 'unlink'; path: string }
  | { kind: 'rename'; from: string; to: string }
  | { kind: 'link'; from: string; to: string }
  | { kind: 'symlink'; target: string; path: string }
  | { kind: 'copyFile'; from: string; to: string; exclusive: boolean; clone: boolean }
  | { kind: 'chmod'; path: string; mode: number }
  | { kind: 'chown'; path: string; follow: boolean; uid: number; gid: number }
  | { kind: 'utimes'; path: string; follow: boolean; atime: number; mtime: number }
  | { kind: 'setxattr'; path: string; follow: boolean; name: string; length: number; fill: number }
  | { kind: 'getxattr'; path: string; follow: boolean; name: string }
  | { kind: 'listxattr'; path: string; follow: boolean }
  | { kind: 'removexattr'; path: string; follow: boolean; name: string }
  | { kind: 'fallocate'; path: string; mode: '' | '-n' | '-p' | '-z'; offset: number; length: number };
type Kind = Op['kind'];

/* How often each kind comes, out of their sum; the two that spawn a program (slow) come rarely. */
const WEIGHTS: [Kind, number][] = [
  ['open', 12], ['close', 4], ['pwrite', 14], ['pread', 8], ['ftruncate', 4], ['fstat', 3], ['fsync', 2],
  ['writeFile', 6], ['readFile', 2], ['truncate', 4], ['stat', 8], ['readdir', 4], ['readlink', 2],
  ['mkdir', 6], ['rmdir', 4], ['unlink', 5], ['rename', 6], ['link', 3], ['symlink', 3], ['copyFile', 3],
  ['chmod', 3], ['utimes', 4], ['setxattr', 3], ['getxattr', 2], ['listxattr', 1],
  ['removexattr', 1], ['fallocate', 1],
];
/* With users, chown too: root's alone would be as dull as any other chmod. */
const USERS_WEIGHTS: [Kind, number][] = [...WEIGHTS, ['chown', 4]];

/* Mostly near the start of a file; some far, leaving holes; none past 64 MiB, which every filesystem here allows. */
function randomOffset(rand: Random): number {
  if (rand.chance(0.75)) return rand.below(256 * KiB);
  if (rand.chance(0.9)) return rand.below(4 * MiB);
  return rand.below(64 * MiB);
}

/* Mostly small; some past FUSE's largest single request (128 KiB), so that they are split. */
function randomLength(rand: Random): number {
  return rand.chance(0.85) ? 1 + rand.below(8 * KiB) : 1 + rand.below(300 * KiB);
}

/*
 * Every permission bit but sticky, and setgid only with group execute: two
 * known differences that are not lklfuse's but the host's FUSE's.  Under
 * FUSE a chown that clears setuid clears sticky too; and a write by a user
 * outside the file's group clears setgid only where the group may execute
 * (as Linux did before 6.2; a local filesystem now clears it always).
 */
function randomMode(rand: Random): number {
  const mode = rand.below(0o10000) & ~0o1000;
  return mode & 0o2000 ? mode | 0o010 : mode;
}

/* Whole seconds, before 2038: what every filesystem here keeps exactly, whatever its inode size. */
function randomTime(rand: Random): number {
  return 1_000_000_000 + rand.below(1_100_000_000);
}

function randomOp(rand: Random, weights: [Kind, number][]): Op {
  let roll = rand.below(weights.reduce((sum, [, w]) => sum + w, 0) * 2) / 2;
  let kind: Kind = weights[0]![0];
  for (const [k, w] of weights) {
    if (roll < w) {
      kind = k;
      break;
    }
    roll -= w;
  }
  const path = () => rand.pick(PATHS);
  const slot = () => rand.below(SLOTS);
  const fill = () => rand.below(2 ** 31);
  switch (kind) {
    case 'open': {
      const flags = [rand.pick(['O_RDONLY', 'O_WRONLY', 'O_RDWR', 'O_RDWR'])];
      const maybe: [string, number][] = [
        ['O_CREAT', 0.6], ['O_EXCL', 0.15], ['O_TRUNC', 0.15], ['O_APPEND', 0.15], ['O_NOFOLLOW', 0.05], ['O_DIRECTORY', 0.05],
      ];
      for (const [flag, p] of maybe) if (rand.chance(p)) flags.push(flag);
      return { kind, slot: slot(), path: path(), flags, mode: randomMode(rand) };
    }
    case 'close':
    case 'fstat':
      return { kind, slot: slot() };
    case 'pwrite':
      return { kind, slot: slot(), offset: randomOffset(rand), length: randomLength(rand), fill: fill() };
    case 'pread':
      return { kind, slot: slot(), offset: randomOffset(rand), length: randomLength(rand) };
    case 'ftruncate':
      return { kind, slot: slot(), length: randomOffset(rand) };
    case 'fsync':
      return { kind, slot: slot(), dataOnly: rand.chance(0.5) };
    case 'writeFile':
      return { kind, path: path(), offset: randomOffset(rand), length: randomLength(rand), fill: fill() };
    case 'readFile':
    case 'rmdir':
    case 'unlink':
    case 'readlink':
      return { kind, path: path() };
    case 'readdir':
      return { kind, path: rand.pick(DIRECTORIES) };
    case 'truncate':
      return { kind, path: path(), length: randomOffset(rand) };
    case 'stat':
      return { kind, path: rand.pick(DIRECTORIES), follow: rand.chance(0.5) };
    case 'mkdir':
      return { kind, path: path(), mode: randomMode(rand) };
    case 'rename':
    case 'link':
      return { kind, from: path(), to: path() };
    case 'symlink':
      return { kind, target: rand.chance(0.1) ? 'self' : rand.pick(LINK_TARGETS), path: path() };
    case 'copyFile':
      return { kind, from: path(), to: path(), exclusive: rand.chance(0.3), clone: rand.chance(0.3) };
    case 'chmod':
      return { kind, path: path(), mode: randomMode(rand) };
    case 'chown':
      return { kind, path: path(), follow: rand.chance(0.8), uid: rand.pick(OWNERS), gid: rand.pick(GROUPS) };
    case 'utimes':
      return { kind, path: path(), follow: rand.chance(0.8), atime: randomTime(rand), mtime: randomTime(rand) };
    case 'setxattr':
      return { kind, path: path(), follow: rand.chance(0.8), name: rand.pick(XATTR_NAMES), length: rand.below(100), fill: fill() };
    case 'getxattr':
    case 'removexattr':
      return { kind, path: path(), follow: rand.chance(0.8), name: rand.pick(XATTR_NAMES) };
    case 'listxattr':
      return { kind, path: path(), follow: rand.chance(0.8) };
    case 'fallocate':
      return { kind, path: path(), mode: rand.pick(['', '-n', '-p', '-z'] as const), offset: randomOffset(rand), length: randomLength(rand) };
  }
}

function describeOp(op: Op): string {
  const args = Object.entries(op)
    .filter(([key]) => key !== 'kind')
    .map(([key, value]) => `${key}=${key === 'mode' && typeof value === 'number' ? `0o${value.toString(8)}` : JSON.stringify(value)}`);
  return `${op.kind} ${args.join(' ')}`;
}

/* --- applying an operation to one side ----------------------------------------- */

/* One mount and the files held open on it. */
interface Side {
  root: string;
  fds: (number | undefined)[];
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex').slice(0, 16);

function fileType(st: fs.Stats): string {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  return `other ${st.mode >>> 12}`;
}

/*
 * A time the kernel sets itself ("now") differs between the two sides, one
 * utimes set does not: where utimes last set `mtimeSet`, both sides must
 * agree on whether the file still has it.
 */
const NOT_THE_ONE_SET = 'changed since utimes';
function mtimeView(mtimeSeconds: number, mtimeSet: number | undefined): { mtime?: number | string } {
  if (mtimeSet === undefined) return {};
  return { mtime: mtimeSeconds === mtimeSet ? mtimeSet : NOT_THE_ONE_SET };
}

/* What stat says that both sides must agree on: not the times the kernel sets itself, nor inode numbers, nor blocks, nor directory sizes. */
function statSummary(st: fs.Stats, mtimeSet: number | undefined) {
  return {
    type: fileType(st),
    mode: (st.mode & 0o7777).toString(8),
    nlink: st.nlink,
    ...(st.isDirectory() ? {} : { size: st.size }),
    ...mtimeView(st.mtimeMs / 1000, mtimeSet),
  };
}

function openFlags(names: string[]): number {
  return names.reduce((flags, name) => flags | (fs.constants as Record<string, number>)[name]!, 0);
}

/* A program's outcome, its messages naming the mount point alike on both sides. */
function spawned(side: Side, cmd: string, args: string[]) {
  const r = spawnSync('timeout', ['30', cmd, ...args], { encoding: 'utf8' });
  // Not there, or hung: the same on both sides, and nothing compared.
  if (r.error || r.status === 124 || r.status === 127) throw new Error(`${cmd}: ${r.error?.message ?? r.stderr}`);
  return { status: r.status, stderr: r.stderr.split(side.root).join('<mnt>') };
}

/* Does `op` on `side`; returns what it gives back (undefined: nothing), or throws the system's error. */
function perform(side: Side, op: Op, mtimeSet: number | undefined): unknown {
  const at = (path: string) => join(side.root, path);
  const withFile = <T>(slot: Slot, use: (fd: number) => T): T | 'no open file' => {
    const fd = side.fds[slot];
    return fd === undefined ? 'no open file' : use(fd);
  };
  switch (op.kind) {
    case 'open': {
      // The file the slot held stays open if this one fails to: the file operations that follow have more to work on.
      const opened = fs.openSync(at(op.path), openFlags(op.flags), op.mode);
      const previous = side.fds[op.slot];
      side.fds[op.slot] = opened;
      if (previous !== undefined) fs.closeSync(previous);
      return undefined;
    }
    case 'close':
      return withFile(op.slot, (fd) => {
        side.fds[op.slot] = undefined;
        fs.closeSync(fd);
      });
    case 'pwrite':
      return withFile(op.slot, (fd) => fs.writeSync(fd, bytes(op.fill, op.length), 0, op.length, op.offset));
    case 'pread':
      return withFile(op.slot, (fd) => {
        const data = Buffer.alloc(op.length);
        const read = fs.readSync(fd, data, 0, op.length, op.offset);
        return { read, sha256: sha256(data.subarray(0, read)) };
      });
    case 'ftruncate':
      return withFile(op.slot, (fd) => fs.ftruncateSync(fd, op.length));
    case 'fstat':
      return withFile(op.slot, (fd) => statSummary(fs.fstatSync(fd), mtimeSet));
    case 'fsync':
      return withFile(op.slot, (fd) => (op.dataOnly ? fs.fdatasyncSync(fd) : fs.fsyncSync(fd)));
    case 'writeFile': {
      const fd = fs.openSync(at(op.path), fs.constants.O_WRONLY | fs.constants.O_CREAT, 0o644);
      try {
        return fs.writeSync(fd, bytes(op.fill, op.length), 0, op.length, op.offset);
      } finally {
        fs.closeSync(fd);
      }
    }
    case 'readFile': {
      const data = fs.readFileSync(at(op.path));
      return { size: data.length, sha256: sha256(data) };
    }
    case 'truncate':
      return fs.truncateSync(at(op.path), op.length);
    case 'stat':
      return statSummary(op.follow ? fs.statSync(at(op.path)) : fs.lstatSync(at(op.path)), mtimeSet);
    case 'readdir':
      return fs.readdirSync(at(op.path)).sort();
    case 'readlink':
      return fs.readlinkSync(at(op.path));
    case 'mkdir':
      return fs.mkdirSync(at(op.path), { mode: op.mode });
    case 'rmdir':
      return fs.rmdirSync(at(op.path));
    case 'unlink':
      return fs.unlinkSync(at(op.path));
    case 'rename':
      return fs.renameSync(at(op.from), at(op.to));
    case 'link':
      return fs.linkSync(at(op.from), at(op.to));
    case 'symlink':
      // 'self': a link to its own name, which loops.
      return fs.symlinkSync(op.target === 'self' ? op.path.split('/').pop()! : op.target, at(op.path));
    case 'copyFile': {
      // FICLONE falls back to copying where the filesystem (or FUSE) cannot clone; copying is copy_file_range(2).
      const mode = (op.exclusive ? fs.constants.COPYFILE_EXCL : 0) | (op.clone ? fs.constants.COPYFILE_FICLONE : 0);
      return fs.copyFileSync(at(op.from), at(op.to), mode);
    }
    case 'chmod':
      return fs.chmodSync(at(op.path), op.mode);
    case 'chown':
      return op.follow ? fs.chownSync(at(op.path), op.uid, op.gid) : fs.lchownSync(at(op.path), op.uid, op.gid);
    case 'utimes': {
      // What the mount says afterwards, too: FUSE answers a setattr with the new attributes.
      if (op.follow) fs.utimesSync(at(op.path), op.atime, op.mtime);
      else fs.lutimesSync(at(op.path), op.atime, op.mtime);
      return (op.follow ? fs.statSync(at(op.path)) : fs.lstatSync(at(op.path))).mtimeMs / 1000;
    }
    case 'setxattr':
      return host.setxattr(at(op.path), op.name, bytes(op.fill, op.length), op.follow);
    case 'getxattr':
      return host.getxattr(at(op.path), op.name, op.follow).toString('hex');
    case 'listxattr':
      return host.listxattr(at(op.path), op.follow).sort();
    case 'removexattr':
      // node:fs has no removexattr, nor the addon: setfattr, seldom, as it spawns.
      return spawned(side, 'setfattr', ['-x', op.name, ...(op.follow ? [] : ['-h']), at(op.path)]);
    case 'fallocate':
      return spawned(side, 'fallocate', [...(op.mode ? [op.mode] : []), '-o', String(op.offset), '-l', String(op.length), at(op.path)]);
  }
}

/*
 * Runs `fn` as `user`: the effective ids and the groups, which is what the
 * host checks and what FUSE passes on; root stays the real and saved user,
 * so that root can come back.  Only synchronous calls are made meanwhile.
 */
const ids = process as Required<Pick<NodeJS.Process, 'getgroups' | 'setgroups' | 'setegid' | 'seteuid'>>; // POSIX has them
const rootGroups = ids.getgroups();
function asUser<T>(user: User, fn: () => T): T {
  if (user === ROOT) return fn();
  ids.setgroups(user.groups);
  ids.setegid(user.gid);
  ids.seteuid(user.uid);
  try {
    return fn();
  } finally {
    ids.seteuid(0);
    ids.setegid(0);
    ids.setgroups(rootGroups);
  }
}

/* 'ok', 'ok <what came back>' or the error code: what must be the same on both sides. */
function outcome(side: Side, op: Op, mtimeSet: number | undefined): string {
  try {
    const value = perform(side, op, mtimeSet);
    return value === undefined ? 'ok' : `ok ${JSON.stringify(value)}`;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    // Only the system's errors are outcomes; node's own (ERR_...) are this test's mistakes.
    if (typeof code !== 'string' || !/^E[A-Z0-9]+$/.test(code)) throw e;
    return code;
  }
}

/* --- mounting ------------------------------------------------------------------ */

function lklfuseCli(args: string[]) {
  return spawnSync('timeout', ['150', process.execPath, lklfuse, ...args], { encoding: 'utf8' });
}

const isMounted = (dir: string) =>
  fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').some((line) => line.split(' ')[1] === dir);

function mountLklfuse(image: string, mountpoint: string, type: string, options: string): void {
  const mounted = lklfuseCli(['-o', `type=${type}${options ? `,${options}` : ''}`, image, mountpoint]);
  if (mounted.status !== 0) throw new Error(`lklfuse ${image} failed (${mounted.status}): ${mounted.stderr}`);
}

/* lklfuse -u returns once the image is synced and clean, and says nothing. */
function unmountLklfuse(mountpoint: string): void {
  const unmounted = lklfuseCli(['-u', mountpoint]);
  expect({ status: unmounted.status, stderr: unmounted.stderr }).toEqual({ status: 0, stderr: '' });
  expect(isMounted(mountpoint)).toBe(false);
}

function closeAll(side: Side): void {
  const fds = side.fds;
  side.fds = [];
  for (const fd of fds) if (fd !== undefined) fs.closeSync(fd);
}

/*
 * The survey of a tree, less what may differ between two correct kernels:
 * holes (st_blocks), and mtimes but for whether those utimes set are still
 * there (`mtimesSet`: path -> mtime in ns).
 */
type Survey = ReturnType<typeof survey>;
function comparable(seen: Survey, mtimesSet: Map<string, string>): Survey {
  const entries: Survey['entries'] = {};
  for (const [rel, entry] of Object.entries(seen.entries)) {
    const { sparse: _holes, ...rest } = entry;
    const set = mtimesSet.get(rel);
    entries[rel] = { ...rest, mtimeNs: set === undefined ? '' : rest.mtimeNs === set ? set : NOT_THE_ONE_SET };
  }
  return { entries, links: seen.links };
}

let work: string;

beforeAll(() => {
  if (!isRoot()) throw new Error('this test compares lklfuse with the host kernel\'s loop mounts: run it as root');
  work = tempDir('lkl-um-differential-');
});

afterAll(() => {
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

/* Each filesystem as mounted by default; ext4 with writeback_cache too, where the host caches writes. */
describe.each([
  ['ext4', ''],
  ['xfs', ''],
  ['btrfs', ''],
  ['ext4', 'writeback_cache'],
  ['ext4', 'allow_other'],
  ['xfs', 'allow_other'],
])('%s %s', (type, options) => {
  const name = options ? `${type}-${options}` : type; // of its files, and in messages
  const seed = SEED_OVERRIDE ?? DEFAULT_SEEDS[type]! + OPTION_SEEDS[options]!;
  const users = options === 'allow_other';
  const prologue = users ? USERS_PROLOGUE : PROLOGUE;
  let imageA: string; // served by lklfuse
  let imageB: string; // loop-mounted by the host
  let lkl: Side;
  let hostSide: Side;

  beforeAll(() => {
    imageA = join(work, `${name}-lklfuse.img`);
    imageB = join(work, `${name}-host.img`);
    filesystem(type).make(imageA);
    run('cp', ['--sparse=always', imageA, imageB]);
    lkl = { root: join(work, `${name}-lklfuse`), fds: [] };
    hostSide = { root: join(work, `${name}-host`), fds: [] };
    fs.mkdirSync(lkl.root);
    fs.mkdirSync(hostSide.root);
    mountLklfuse(imageA, lkl.root, type, options);
    run('timeout', ['60', 'mount', '-o', 'loop', '-t', type, imageB, hostSide.root]);
  });

  /* Whatever happened, nothing stays open or mounted. */
  afterAll(() => {
    for (const side of [lkl, hostSide]) if (side) closeAll(side);
    if (lkl && isMounted(lkl.root) && lklfuseCli(['-u', lkl.root]).status !== 0) {
      spawnSync('timeout', ['30', 'fusermount3', '-u', '-z', lkl.root]);
    }
    if (hostSide && isMounted(hostSide.root) && spawnSync('timeout', ['60', 'umount', hostSide.root]).status !== 0) {
      spawnSync('timeout', ['30', 'umount', '-l', hostSide.root]);
    }
  });

  test(`${OP_COUNT} random operations end the same on lklfuse as on the host kernel, and so do the trees and images`, () => {
    const rand = new Random(seed);
    const mtimesSet = new Map<bigint, number>(); // host inode -> the mtime utimes last gave it
    const history: string[] = [];
    const hostInode = (path: string, follow: boolean) => {
      const full = join(hostSide.root, path);
      try {
        return (follow ? fs.statSync(full, { bigint: true }) : fs.lstatSync(full, { bigint: true })).ino;
      } catch {
        return undefined;
      }
    };

    for (let index = 0; index < OP_COUNT; index++) {
      // Halfway (by default), from the image afresh: what lklfuse and the host's FUSE only held in caches is gone.
      if (index === REMOUNT_AT) {
        closeAll(lkl);
        closeAll(hostSide);
        unmountLklfuse(lkl.root);
        mountLklfuse(imageA, lkl.root, type, options);
        history.push(`${index}: (every file closed on both sides; lklfuse unmounted and mounted again)`);
      }

      const op = prologue[index] ?? randomOp(rand, users ? USERS_WEIGHTS : WEIGHTS);
      const user = index < prologue.length || !users ? ROOT : rand.pick(USERS);
      let inode: bigint | undefined;
      if (op.kind === 'stat') inode = hostInode(op.path, op.follow);
      const fd = op.kind === 'fstat' ? hostSide.fds[op.slot] : undefined;
      if (fd !== undefined) inode = fs.fstatSync(fd, { bigint: true }).ino;
      const mtimeSet = inode === undefined ? undefined : mtimesSet.get(inode);

      const onLklfuse = asUser(user, () => outcome(lkl, op, mtimeSet));
      const onHost = asUser(user, () => outcome(hostSide, op, mtimeSet));
      const made = `${describeOp(op)}${user === ROOT ? '' : ` (as ${user.name})`}`;
      if (onLklfuse !== onHost) {
        throw new Error(
          [
            `${name}: lklfuse and the host kernel differ at op ${index} (seed ${seed}; replay with LKL_UM_DIFF_SEED=${seed} LKL_UM_DIFF_OPS=${index + 1} npx jest -t ${type} ...)`,
            `  op:        ${made}`,
            `  lklfuse:   ${onLklfuse}`,
            `  host:      ${onHost}`,
            `  the ${history.length} ops before, with their (common) outcomes:`,
            ...history.map((line) => `    ${line}`),
          ].join('\n'),
        );
      }
      history.push(`${index}: ${made} -> ${onHost}`);
      if (history.length > HISTORY) history.shift();

      if (op.kind === 'utimes' && onHost.startsWith('ok')) mtimesSet.set(hostInode(op.path, op.follow)!, op.mtime);
    }

    closeAll(lkl);
    closeAll(hostSide);

    // The same trees (survey leaves out symlinks' mtimes).
    const hostSurvey = survey(hostSide.root);
    const mtimesSetAt = new Map<string, string>();
    for (const rel of Object.keys(hostSurvey.entries)) {
      const set = mtimesSet.get(hostInode(rel, false)!);
      if (set !== undefined) mtimesSetAt.set(rel, String(BigInt(set) * 1_000_000_000n));
    }
    const expected = comparable(hostSurvey, mtimesSetAt);
    expect(comparable(survey(lkl.root), mtimesSetAt)).toEqual(expected);

    unmountLklfuse(lkl.root);
    run('timeout', ['60', 'umount', hostSide.root]);

    filesystem(type).fsck!(imageA);
    filesystem(type).fsck!(imageB);

    // What lklfuse wrote is in the image, as the host reads it.
    withLoop(imageA, (dir) => expect(comparable(survey(dir), mtimesSetAt)).toEqual(expected));
  }, ROW_TIMEOUT_MS);
});

/*
 * Filesystems the host kernel here cannot mount, so nothing to compare
 * each operation with: the same sequence on lklfuse alone.  No operation
 * may fail as a broken mount fails (EIO, ENOTCONN, ESHUTDOWN); at the end,
 * what the mount showed must be what a fresh mount of the image shows, and
 * the image fsck-clean.
 */
const BROKEN = new Set(['EIO', 'ENOTCONN', 'ESHUTDOWN', 'ECONNABORTED', 'EUCLEAN', 'EBADMSG']);

describe.each([
  ['vfat', ['mkfs.vfat']],
  ['exfat', ['mkfs.exfat']],
  ['f2fs', ['mkfs.f2fs', '-q']],
])('%s, lklfuse alone', (type, mkfs) => {
  const seed = SEED_OVERRIDE ?? 0xfa7 + ['vfat', 'exfat', 'f2fs'].indexOf(type);
  let image: string;
  let lkl: Side;

  beforeAll(() => {
    image = join(work, `${type}-alone.img`);
    fs.writeFileSync(image, '');
    fs.truncateSync(image, 256 << 20); // room for the far writes
    run(mkfs[0]!, [...mkfs.slice(1), image]);
    lkl = { root: join(work, `${type}-alone`), fds: [] };
    fs.mkdirSync(lkl.root);
    mountLklfuse(image, lkl.root, type, '');
  });

  afterAll(() => {
    if (lkl) closeAll(lkl);
    if (lkl && isMounted(lkl.root) && lklfuseCli(['-u', lkl.root]).status !== 0) {
      spawnSync('timeout', ['30', 'fusermount3', '-u', '-z', lkl.root]);
    }
  });

  test(`${OP_COUNT} random operations: none fails as a broken mount does, and the image holds what the mount showed`, () => {
    const rand = new Random(seed);
    const history: string[] = [];
    for (let index = 0; index < OP_COUNT; index++) {
      if (index === REMOUNT_AT) {
        closeAll(lkl);
        unmountLklfuse(lkl.root);
        mountLklfuse(image, lkl.root, type, '');
      }
      const op = PROLOGUE[index] ?? randomOp(rand, WEIGHTS);
      // vfat gives back the clusters fallocate kept past the end when it
      // lets go of the inode, and sets the mtime then (fat_free), on any
      // mount: the mtime the image ends with is not the one shown.
      if (type === 'vfat' && op.kind === 'fallocate' && op.mode === '-n') op.mode = '';
      const result = outcome(lkl, op, undefined);
      history.push(`${index}: ${describeOp(op)} -> ${result}`);
      if (history.length > HISTORY) history.shift();
      if (BROKEN.has(result)) {
        throw new Error([`${type}: op ${index} failed with ${result} (seed ${seed})`, ...history.map((line) => `  ${line}`)].join('\n'));
      }
    }
    closeAll(lkl);
    const shown = survey(lkl.root);
    unmountLklfuse(lkl.root);
    filesystem(type).fsck!(image);
    mountLklfuse(image, lkl.root, type, 'ro');
    try {
      expect(survey(lkl.root)).toEqual(shown);
    } finally {
      unmountLklfuse(lkl.root);
    }
  }, ROW_TIMEOUT_MS);
});
