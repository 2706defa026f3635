// Decoding what the kernel returns: statx into Stats (as node:fs has them),
// linux_dirent64 into Dirents, statfs into StatFs.  Layouts come from the
// kernel's own headers (generated/abi.ts).
import { CONSTANTS, STRUCTS } from './generated/abi';

type StructName = keyof typeof STRUCTS;

/** Reads a field of a structure at `base` in `buf`, as a bigint. */
export function readField<S extends StructName>(
  buf: Buffer,
  base: number,
  struct: S,
  field: keyof (typeof STRUCTS)[S]['fields'],
  signed = false,
): bigint {
  const [offset, size] = (STRUCTS[struct].fields as Record<string, readonly [number, number]>)[
    field as string
  ];
  const at = base + offset;
  switch (size) {
    case 1:
      return BigInt(signed ? buf.readInt8(at) : buf.readUInt8(at));
    case 2:
      return BigInt(signed ? buf.readInt16LE(at) : buf.readUInt16LE(at));
    case 4:
      return BigInt(signed ? buf.readInt32LE(at) : buf.readUInt32LE(at));
    case 8:
      return signed ? buf.readBigInt64LE(at) : buf.readBigUInt64LE(at);
    default:
      throw new Error(`${String(struct)}.${String(field)}: field of ${size} bytes`);
  }
}

export function offsetOf<S extends StructName>(struct: S, field: keyof (typeof STRUCTS)[S]['fields']): number {
  return (STRUCTS[struct].fields as Record<string, readonly [number, number]>)[field as string][0];
}

/** dev_t the way glibc (and so node:fs) encodes it. */
function makedev(major: bigint, minor: bigint): bigint {
  return (
    ((major & 0xfffff000n) << 32n) |
    ((major & 0xfffn) << 8n) |
    ((minor & 0xffffff00n) << 12n) |
    (minor & 0xffn)
  );
}

const { S_IFMT, S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK } = CONSTANTS;

abstract class FileTypes {
  protected abstract typeBits(): number;
  isFile(): boolean {
    return this.typeBits() === S_IFREG;
  }
  isDirectory(): boolean {
    return this.typeBits() === S_IFDIR;
  }
  isSymbolicLink(): boolean {
    return this.typeBits() === S_IFLNK;
  }
  isCharacterDevice(): boolean {
    return this.typeBits() === S_IFCHR;
  }
  isBlockDevice(): boolean {
    return this.typeBits() === S_IFBLK;
  }
  isFIFO(): boolean {
    return this.typeBits() === S_IFIFO;
  }
  isSocket(): boolean {
    return this.typeBits() === S_IFSOCK;
  }
}

interface RawStat {
  dev: bigint;
  ino: bigint;
  mode: bigint;
  nlink: bigint;
  uid: bigint;
  gid: bigint;
  rdev: bigint;
  size: bigint;
  blksize: bigint;
  blocks: bigint;
  atimeNs: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  birthtimeNs: bigint;
}

function timestampNs(buf: Buffer, base: number, field: 'stx_atime' | 'stx_mtime' | 'stx_ctime' | 'stx_btime'): bigint {
  const at = base + offsetOf('statx', field);
  const sec = readField(buf, at, 'statx_timestamp', 'tv_sec', true);
  const nsec = readField(buf, at, 'statx_timestamp', 'tv_nsec');
  return sec * 1_000_000_000n + nsec;
}

/** Decodes a struct statx at `base` in `buf`. */
export function decodeStatx(buf: Buffer, base = 0): RawStat {
  const f = (name: keyof (typeof STRUCTS)['statx']['fields']) => readField(buf, base, 'statx', name);
  const btimeKnown = (f('stx_mask') & BigInt(CONSTANTS.STATX_BTIME)) !== 0n;
  return {
    dev: makedev(f('stx_dev_major'), f('stx_dev_minor')),
    ino: f('stx_ino'),
    mode: f('stx_mode'),
    nlink: f('stx_nlink'),
    uid: f('stx_uid'),
    gid: f('stx_gid'),
    rdev: makedev(f('stx_rdev_major'), f('stx_rdev_minor')),
    size: f('stx_size'),
    blksize: f('stx_blksize'),
    blocks: f('stx_blocks'),
    atimeNs: timestampNs(buf, base, 'stx_atime'),
    mtimeNs: timestampNs(buf, base, 'stx_mtime'),
    ctimeNs: timestampNs(buf, base, 'stx_ctime'),
    // Like node:fs: without a birth time, the epoch.
    birthtimeNs: btimeKnown ? timestampNs(buf, base, 'stx_btime') : 0n,
  };
}

const nsToMs = (ns: bigint) => Number(ns / 1000n) / 1000;

/** A file's status, as node:fs's Stats (numbers; ms times). */
export class Stats extends FileTypes {
  readonly dev: number;
  readonly ino: number;
  readonly mode: number;
  readonly nlink: number;
  readonly uid: number;
  readonly gid: number;
  readonly rdev: number;
  readonly size: number;
  readonly blksize: number;
  readonly blocks: number;
  readonly atimeMs: number;
  readonly mtimeMs: number;
  readonly ctimeMs: number;
  readonly birthtimeMs: number;
  readonly atime: Date;
  readonly mtime: Date;
  readonly ctime: Date;
  readonly birthtime: Date;

  constructor(raw: RawStat) {
    super();
    this.dev = Number(raw.dev);
    this.ino = Number(raw.ino);
    this.mode = Number(raw.mode);
    this.nlink = Number(raw.nlink);
    this.uid = Number(raw.uid);
    this.gid = Number(raw.gid);
    this.rdev = Number(raw.rdev);
    this.size = Number(raw.size);
    this.blksize = Number(raw.blksize);
    this.blocks = Number(raw.blocks);
    this.atimeMs = nsToMs(raw.atimeNs);
    this.mtimeMs = nsToMs(raw.mtimeNs);
    this.ctimeMs = nsToMs(raw.ctimeNs);
    this.birthtimeMs = nsToMs(raw.birthtimeNs);
    this.atime = new Date(this.atimeMs);
    this.mtime = new Date(this.mtimeMs);
    this.ctime = new Date(this.ctimeMs);
    this.birthtime = new Date(this.birthtimeMs);
  }

  protected typeBits(): number {
    return this.mode & S_IFMT;
  }
}

/** A file's status with bigints and nanosecond times, as node:fs's BigIntStats. */
export class BigIntStats extends FileTypes {
  readonly dev: bigint;
  readonly ino: bigint;
  readonly mode: bigint;
  readonly nlink: bigint;
  readonly uid: bigint;
  readonly gid: bigint;
  readonly rdev: bigint;
  readonly size: bigint;
  readonly blksize: bigint;
  readonly blocks: bigint;
  readonly atimeNs: bigint;
  readonly mtimeNs: bigint;
  readonly ctimeNs: bigint;
  readonly birthtimeNs: bigint;
  readonly atimeMs: bigint;
  readonly mtimeMs: bigint;
  readonly ctimeMs: bigint;
  readonly birthtimeMs: bigint;
  readonly atime: Date;
  readonly mtime: Date;
  readonly ctime: Date;
  readonly birthtime: Date;

  constructor(raw: RawStat) {
    super();
    this.dev = raw.dev;
    this.ino = raw.ino;
    this.mode = raw.mode;
    this.nlink = raw.nlink;
    this.uid = raw.uid;
    this.gid = raw.gid;
    this.rdev = raw.rdev;
    this.size = raw.size;
    this.blksize = raw.blksize;
    this.blocks = raw.blocks;
    this.atimeNs = raw.atimeNs;
    this.mtimeNs = raw.mtimeNs;
    this.ctimeNs = raw.ctimeNs;
    this.birthtimeNs = raw.birthtimeNs;
    this.atimeMs = raw.atimeNs / 1_000_000n;
    this.mtimeMs = raw.mtimeNs / 1_000_000n;
    this.ctimeMs = raw.ctimeNs / 1_000_000n;
    this.birthtimeMs = raw.birthtimeNs / 1_000_000n;
    this.atime = new Date(Number(this.atimeMs));
    this.mtime = new Date(Number(this.mtimeMs));
    this.ctime = new Date(Number(this.ctimeMs));
    this.birthtime = new Date(Number(this.birthtimeMs));
  }

  protected typeBits(): number {
    return Number(this.mode) & S_IFMT;
  }
}

const DT_TO_S_IF = 12; // d_type is the S_IF* type bits shifted down by 12

/** A directory entry, as node:fs's Dirent. */
export class Dirent extends FileTypes {
  constructor(
    readonly name: string,
    readonly parentPath: string,
    private readonly dtype: number,
    /** The inode number, which node:fs does not give. */
    readonly ino: bigint,
  ) {
    super();
  }

  /** node:fs's older name for parentPath. */
  get path(): string {
    return this.parentPath;
  }

  protected typeBits(): number {
    return this.dtype << DT_TO_S_IF;
  }
}

/** Decodes the linux_dirent64 records in buf[0, length). */
export function* decodeDirents(buf: Buffer, length: number): Generator<{ name: Buffer; type: number; ino: bigint }> {
  const nameAt = offsetOf('linux_dirent64', 'd_name');
  for (let at = 0; at < length; ) {
    const reclen = Number(readField(buf, at, 'linux_dirent64', 'd_reclen'));
    const end = buf.indexOf(0, at + nameAt);
    yield {
      name: buf.subarray(at + nameAt, end < 0 || end > at + reclen ? at + reclen : end),
      type: Number(readField(buf, at, 'linux_dirent64', 'd_type')),
      ino: readField(buf, at, 'linux_dirent64', 'd_ino'),
    };
    at += reclen;
  }
}

/** A filesystem's status, as node:fs's StatFs. */
export interface StatFs<T extends number | bigint = number> {
  type: T;
  bsize: T;
  blocks: T;
  bfree: T;
  bavail: T;
  files: T;
  ffree: T;
}

export function decodeStatfs(buf: Buffer, bigint: boolean): StatFs<number> | StatFs<bigint> {
  const f = (name: keyof (typeof STRUCTS)['statfs']['fields']) => readField(buf, 0, 'statfs', name);
  const raw = {
    type: f('f_type'),
    bsize: f('f_bsize'),
    blocks: f('f_blocks'),
    bfree: f('f_bfree'),
    bavail: f('f_bavail'),
    files: f('f_files'),
    ffree: f('f_ffree'),
  };
  if (bigint) return raw;
  return Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, Number(v)])) as unknown as StatFs<number>;
}
