// Exporting a mounted image to a tar stream, entry by entry, as GNU tar
// would archive it: pax headers with nanosecond times and every extended
// attribute (SCHILY.xattr.*), hard links as link entries, sparse files as
// GNU sparse 1.0, sockets skipped.  Entries are read ahead of the writer, a
// few dozen at a time; the stream's back-pressure bounds the memory.
import { CONSTANTS as C, Excluder, Kernel, KernelError, Reporter, resolveInImage } from '@lkl-um/core';
import type { BigIntStats, RawDirent } from '@lkl-um/core';
import { Transform } from 'node:stream';
import type { Pack } from 'tar-stream';
import { asciiStandIn, fitsLinkname, fitsUstar, header, paxRecords, TarHeader } from './headers';

export interface ExportOptions {
  format: 'pax' | 'gnu';
  exclude: Excluder;
  /** Sort each directory's entries by name: the same image, the same bytes. */
  sort: boolean;
  /** Owner and group names from the image's /etc/passwd and /etc/group. */
  names?: { users: Map<number, string>; groups: Map<number, string> };
  /** Every mtime this, or (clamp) at most this; seconds.nanoseconds. */
  mtime?: { ns: bigint; clamp: boolean };
  /** Told each entry's security.selinux: its path in the kernel (as bytes, see above), the label. */
  selinux?: (path: string, context: Buffer) => void;
  /** Called with each entry's name as it is archived (for -v). */
  onEntry?: (name: string) => void;
}

export interface ExportProgress {
  entries: number;
  bytes: number;
}

interface Entry {
  path: string; // in the kernel
  name: string; // in the archive
  st: BigIntStats;
  xattrs: [string, Buffer][];
  link?: string;
  data?: Buffer; // small files, read ahead
  extents?: [number, number][]; // sparse files
}

const SMALL = 256 << 10;
const CHUNK = 1 << 20;
const LOOKAHEAD = 48;
const NS = 1_000_000_000n;

const typeOf = (mode: number) => mode & C.S_IFMT;

/*
 * A POSIX ACL xattr (version 2: entries of tag, permissions and id, each
 * little-endian) as the text GNU tar's SCHILY.acl records hold: one
 * "tag:qualifier:rwx" line per entry, ids as numbers.  Undefined when it
 * is not such an ACL.
 */
function aclText(value: Buffer): string | undefined {
  if (value.length < 4 || (value.length - 4) % 8 || value.readUInt32LE(0) !== 2) return undefined;
  const tags: Record<number, string> = { 0x01: 'user:', 0x02: 'user:', 0x04: 'group:', 0x08: 'group:', 0x10: 'mask:', 0x20: 'other:' };
  let text = '';
  for (let at = 4; at < value.length; at += 8) {
    const tag = value.readUInt16LE(at);
    const perm = value.readUInt16LE(at + 2);
    if (!tags[tag]) return undefined;
    const who = tag === 0x02 || tag === 0x08 ? String(value.readUInt32LE(at + 4)) : '';
    text += `${tags[tag]}${who}:${perm & 4 ? 'r' : '-'}${perm & 2 ? 'w' : '-'}${perm & 1 ? 'x' : '-'}\n`;
  }
  return text;
}

/*
 * Names and link targets are carried as byte strings (latin1: one
 * character per byte), so that names that are not UTF-8 reach the archive
 * as they are, as GNU tar writes them.  bytes() gives the bytes back, for
 * the kernel and for the archive; shown() makes them readable.
 */
const bytes = (s: string) => Buffer.from(s, 'latin1');
export const shown = (s: string) => Buffer.from(s, 'latin1').toString('utf8');
const DT_UNKNOWN = 0;
const DT_DIR = 4;
const isDir = (mode: number) => (mode & C.S_IFMT) === C.S_IFDIR;

/* A pax time: its sign, then seconds and a fraction (-1.5 is 1.5 s before 1970). */
function paxTime(ns: bigint): string {
  if (ns < 0n) return `-${paxTime(-ns)}`;
  const sec = ns / NS;
  const frac = ns % NS;
  return frac ? `${sec}.${frac.toString().padStart(9, '0').replace(/0+$/, '')}` : `${sec}`;
}

export class TarExporter {
  readonly progress: ExportProgress = { entries: 0, bytes: 0 };
  readonly #firstName = new Map<string, string>(); // dev:ino -> archive name

  constructor(
    private readonly k: Kernel,
    private readonly pack: Pack,
    private readonly options: ExportOptions,
    private readonly report: Reporter,
  ) {}

  /* How image paths are named to the user (export()'s `display`). */
  #display: (path: string) => string = (path) => path;

  /*
   * An error's message, the paths it quotes (the kernel's: under the
   * image's mount point) named as the user knows them, from the image's
   * root.  They come decoded as UTF-8; display() takes byte strings.
   */
  #explain(e: unknown): string {
    return (e as Error).message.replace(/'([^']*)'/g, (_, path: string) => `'${this.#display(Buffer.from(path, 'utf8').toString('latin1'))}'`);
  }

  /** Archives the tree at `root` in the kernel; `display` names image paths. */
  async export(root: string, display: (path: string) => string): Promise<void> {
    this.#display = display;
    const queue: Promise<Entry | undefined>[] = [];
    const walker = this.#walk(root, './');
    // Read ahead of the writer; write in order.
    const next = await walker.next();
    try {
      await this.#drain(walker, next, queue, display);
    } finally {
      // What was read ahead holds files open: let it finish.
      await Promise.allSettled(queue);
    }
  }

  async #drain(
    walker: AsyncGenerator<{ path: string; name: string }>,
    first: IteratorResult<{ path: string; name: string }>,
    queue: Promise<Entry | undefined>[],
    display: (path: string) => string,
  ): Promise<void> {
    let next = first;
    while (!next.done || queue.length) {
      while (!next.done && queue.length < LOOKAHEAD) {
        const { path, name } = next.value;
        queue.push(
          this.#read(path, name).catch((e) => {
            this.report.error(`${display(path)}: ${this.#explain(e)}`);
            return undefined;
          }),
        );
        next = await walker.next();
      }
      const entry = await queue.shift();
      if (entry) await this.#write(entry, display);
    }
  }

  async *#walk(path: string, name: string): AsyncGenerator<{ path: string; name: string }> {
    yield { path, name };
    let entries: { name: string; dir: boolean }[];
    try {
      entries = await this.#list(path);
    } catch (e) {
      if ((e as KernelError).code !== 'ENOTDIR') this.report.error(`cannot read directory '${this.#display(path)}': ${this.#explain(e)}`);
      return;
    }
    for (const d of entries) {
      const rel = `${name}${d.name}`;
      if (this.options.exclude.excludes(rel.slice(2))) continue;
      const child = `${path.replace(/\/$/, '')}/${d.name}`;
      if (d.dir) yield* this.#walk(child, `${rel}/`);
      else yield { path: child, name: rel };
    }
  }

  /* A directory's entries, their names as byte strings; sorted by bytes with --sort=name. */
  async #list(path: string): Promise<{ name: string; dir: boolean }[]> {
    const dir = await this.k.fs.opendir(bytes(path));
    const raw: RawDirent[] = [];
    try {
      for (let batch = await dir.readRaw(); batch.length; batch = await dir.readRaw()) raw.push(...batch);
    } finally {
      await dir.close();
    }
    if (this.options.sort) raw.sort((a, b) => Buffer.compare(a.name, b.name));
    // Filesystems that keep no types in directories (iso9660) say DT_UNKNOWN:
    // then each entry is looked at, LOOKAHEAD at a time (all at once, a
    // large directory's calls would fill the kernel's window).
    const entries: { name: string; dir: boolean }[] = [];
    for (let at = 0; at < raw.length; at += LOOKAHEAD) {
      const some = raw.slice(at, at + LOOKAHEAD).map(async (e) => {
        const name = e.name.toString('latin1');
        const dir = e.type === DT_UNKNOWN ? isDir(Number((await this.k.fs.lstat(bytes(`${path}/${name}`))).mode)) : e.type === DT_DIR;
        return { name, dir };
      });
      entries.push(...(await Promise.all(some)));
    }
    return entries;
  }

  async #read(path: string, name: string): Promise<Entry> {
    const st = await this.k.fs.lstat(bytes(path), { bigint: true });
    const entry: Entry = { path, name, st, xattrs: [] };
    const mode = Number(st.mode);
    const pax = this.options.format === 'pax';
    // gnu keeps none: a damaged xattr block must not cost the entry there.
    const names = await this.k.fs.llistxattr(bytes(path)).catch((e: KernelError) =>
      e.code === 'EOPNOTSUPP' || !pax ? [] : Promise.reject(e),
    );
    // gnu: only the label, for -s.
    const wanted = pax ? names.sort() : names.filter((x) => x === 'security.selinux' && this.options.selinux);
    for (const x of wanted) entry.xattrs.push([x, await this.k.fs.lgetxattr(bytes(path), x)]);
    if (!pax && names.length) {
      // File capabilities and ACLs among them: lost without a word, else.
      this.report.warn('xattrs', `--format gnu keeps no extended attributes (capabilities, ACLs), like those of '${this.#display(path)}': pax, the default, does`);
    }
    if (typeOf(mode) === C.S_IFLNK) entry.link = (await this.k.fs.readlink(bytes(path), { encoding: 'buffer' })).toString('latin1');
    if (typeOf(mode) === C.S_IFREG) {
      const size = Number(st.size);
      if (Number(st.blocks) * 512 < size && this.options.format === 'pax') {
        entry.extents = await this.#extents(path, size);
        // A filesystem without SEEK_DATA (squashfs) calls it all data:
        // find the holes by their zeros, as GNU tar does.
        if (entry.extents.length === 1 && entry.extents[0][0] === 0 && entry.extents[0][1] === size) {
          entry.extents = await this.#nonZero(path, size);
        }
      } else if (size <= SMALL) {
        // Exactly the size the header will say: open, one read, close.
        // Less than that (a read error, a bad block): left to the writer,
        // which reads it again as a large file and pads what it cannot,
        // as GNU tar does, rather than leave the file out.
        const fh = await this.k.fs.open(bytes(path), C.O_RDONLY | C.O_NOFOLLOW);
        try {
          const data = Buffer.allocUnsafe(size);
          const { bytesRead } = size ? await fh.read(data, 0, size, 0).catch(() => ({ bytesRead: -1 })) : { bytesRead: 0 };
          if (bytesRead === size) entry.data = data;
        } finally {
          await fh.close();
        }
      }
    }
    return entry;
  }

  async #extents(path: string, size: number): Promise<[number, number][]> {
    const fh = await this.k.fs.open(bytes(path), C.O_RDONLY | C.O_NOFOLLOW);
    try {
      return await fh.dataExtents(size);
    } finally {
      await fh.close();
    }
  }

  async #nonZero(path: string, size: number): Promise<[number, number][]> {
    const BLOCK = 4096;
    const zero = Buffer.alloc(BLOCK);
    const extents: [number, number][] = [];
    const fh = await this.k.fs.open(bytes(path), C.O_RDONLY | C.O_NOFOLLOW);
    try {
      const buf = Buffer.allocUnsafe(CHUNK);
      for (let at = 0; at < size; ) {
        const { bytesRead } = await fh.read(buf, 0, Math.min(CHUNK, size - at), at);
        if (!bytesRead) break;
        for (let off = 0; off < bytesRead; off += BLOCK) {
          const end = Math.min(off + BLOCK, bytesRead);
          if (buf.subarray(off, end).equals(zero.subarray(0, end - off))) continue;
          const last = extents[extents.length - 1];
          if (last && last[1] === at + off) last[1] = at + end;
          else extents.push([at + off, at + end]);
        }
        at += bytesRead;
      }
      return extents;
    } finally {
      await fh.close();
    }
  }

  async #write(e: Entry, display: (p: string) => string): Promise<void> {
    const mode = Number(e.st.mode);
    const type = typeOf(mode);
    if (type === C.S_IFSOCK) {
      this.report.warn('sockets', `${display(e.path)}: socket ignored`);
      return;
    }
    const gnu = this.options.format === 'gnu';
    const uid = Number(e.st.uid);
    const gid = Number(e.st.gid);
    let mtimeNs = e.st.mtimeNs;
    if (this.options.mtime) {
      const { ns, clamp } = this.options.mtime;
      if (!clamp || mtimeNs > ns) mtimeNs = ns;
    }
    const h: TarHeader = {
      name: e.name,
      mode,
      uid,
      gid,
      size: 0,
      mtime: Number(mtimeNs / NS) - (mtimeNs % NS < 0n ? 1 : 0),
      typeflag: '0',
      uname: this.options.names?.users.get(uid),
      gname: this.options.names?.groups.get(gid),
    };
    const records: [string, string | Buffer][] = [];
    if (!gnu) {
      records.push(['mtime', paxTime(mtimeNs)]);
      if (!this.options.mtime) {
        records.push(['atime', paxTime(e.st.atimeNs)], ['ctime', paxTime(e.st.ctimeNs)]);
      }
      // A key ends at '=': GNU tar percent-encodes it, and '%' with it.
      for (const [n, v] of e.xattrs) records.push([`SCHILY.xattr.${n.replace(/[%=]/g, (c) => (c === '%' ? '%25' : '%3D'))}`, v]);
      // POSIX ACLs also as GNU tar keeps them, for its --acls.
      for (const [n, v] of e.xattrs) {
        const kind = n === 'system.posix_acl_access' ? 'access' : n === 'system.posix_acl_default' ? 'default' : undefined;
        const text = kind && aclText(v);
        if (text) records.push([`SCHILY.acl.${kind}`, text]);
      }
    }
    const selinux = e.xattrs.find(([n]) => n === 'security.selinux');
    if (selinux) this.options.selinux?.(e.path, selinux[1]);

    // A later name of an inode (of any kind but a directory) is a hard link
    // to its first name, as GNU tar writes it.
    if (type !== C.S_IFDIR && e.st.nlink > 1n) {
      const key = `${e.st.dev}:${e.st.ino}`;
      const first = this.#firstName.get(key);
      if (first) {
        h.typeflag = '1';
        h.linkname = first;
        await this.#headers(h, records);
        return this.#push({ type: 'link', raw: Buffer.alloc(0) }, null);
      }
      this.#firstName.set(key, e.name);
    }
    if (type === C.S_IFDIR) {
      h.typeflag = '5';
    } else if (type === C.S_IFLNK) {
      h.typeflag = '2';
      h.linkname = e.link;
    } else if (type === C.S_IFCHR || type === C.S_IFBLK) {
      h.typeflag = type === C.S_IFCHR ? '3' : '4';
      const rdev = e.st.rdev;
      h.devmajor = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
      h.devminor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
    } else if (type === C.S_IFIFO) {
      h.typeflag = '6';
    } else if (type === C.S_IFREG) {
      return this.#writeFile(e, h, records, display);
    }
    await this.#headers(h, records);
    await this.#push({ type: 'directory', raw: Buffer.alloc(0) }, null);
  }

  /*
   * What goes before an entry's own header: a pax header with its records
   * (and its name and link target when a ustar header cannot hold them),
   * or GNU's ././@LongLink entries.  Then the entry's header itself.
   */
  async #headers(h: TarHeader, records: [string, string | Buffer][], shown = h.name): Promise<void> {
    const gnu = this.options.format === 'gnu';
    this.options.onEntry?.(shown);
    if (gnu) {
      if (h.name.length > 100) await this.#longLink('L', h.name);
      if (h.linkname && h.linkname.length > 100) await this.#longLink('K', h.linkname);
    } else {
      if (!fitsUstar(h.name)) records.unshift(['path', bytes(h.name)]);
      if (h.linkname && !fitsLinkname(h.linkname)) records.unshift(['linkpath', bytes(h.linkname)]);
      if (h.uid > 0o7777777) records.push(['uid', String(h.uid)]);
      if (h.gid > 0o7777777) records.push(['gid', String(h.gid)]);
      if (h.size > 0o77777777777) records.push(['size', String(h.size)]);
      if (records.length) {
        const data = paxRecords(records);
        const slash = h.name.replace(/\/$/, '').lastIndexOf('/');
        const paxName = `${h.name.slice(0, slash + 1)}PaxHeaders/${h.name.slice(slash + 1)}`;
        const paxHeader = header(
          { name: asciiStandIn(paxName), mode: 0o644, uid: 0, gid: 0, size: data.length, mtime: h.mtime, typeflag: 'x' },
          false,
        );
        await this.#push({ type: 'file', raw: paxHeader }, data);
      }
      if (!fitsUstar(h.name)) h.name = asciiStandIn(h.name);
      if (h.linkname && !fitsLinkname(h.linkname)) h.linkname = asciiStandIn(h.linkname);
    }
    this.#pendingHeader = header(h, gnu);
    this.progress.entries++;
  }

  async #longLink(typeflag: 'L' | 'K', name: string): Promise<void> {
    const data = bytes(`${name}\0`);
    const h = header({ name: '././@LongLink', mode: 0o644, uid: 0, gid: 0, size: data.length, mtime: 0, typeflag }, true);
    await this.#push({ type: 'file', raw: h }, data);
  }

  #pendingHeader: Buffer | undefined;

  /*
   * An entry through tar-stream, whose encoder pushes our own header
   * (`raw`) instead of one of its own.  A null body: a void entry; else
   * the body, whole.
   */
  #push(h: { type: string; raw: Buffer }, data: Buffer | null): Promise<void> {
    if (!h.raw.length) {
      h.raw = this.#pendingHeader!;
      this.#pendingHeader = undefined;
    }
    this.#checkOpen();
    return new Promise((resolve, reject) => {
      const entry = this.pack.entry as unknown as (
        h: object,
        data: Buffer | null,
        cb: (err?: Error | null) => void,
      ) => NodeJS.EventEmitter;
      entry.call(this.pack, h, data, (err) => (err ? reject(err) : resolve())).on('error', reject);
    });
  }

  /* The archive's stream has failed (its reader went away): stop. */
  #checkOpen(): void {
    if ((this.pack as unknown as { destroying: boolean }).destroying) throw new ArchiveClosed();
  }

  async #writeFile(e: Entry, h: TarHeader, records: [string, string | Buffer][], display: (p: string) => string): Promise<void> {
    const size = Number(e.st.size);
    if (e.data) {
      h.size = e.data.length;
      await this.#headers(h, records);
      this.progress.bytes += e.data.length;
      return this.#push({ type: 'file', raw: Buffer.alloc(0) }, e.data);
    }
    let extents = e.extents;
    let prefix: Buffer | undefined;
    if (extents) {
      // GNU sparse 1.0: the map first, in decimal lines, padded to a block.
      const holeAtEnd = !extents.length || extents[extents.length - 1][1] < size;
      const map = holeAtEnd ? [...extents, [size, size] as [number, number]] : extents;
      const lines = [String(map.length), ...map.flatMap(([s, end]) => [String(s), String(end - s)])];
      const text = Buffer.from(lines.join('\n') + '\n');
      prefix = Buffer.concat([text, Buffer.alloc((512 - (text.length % 512)) % 512)]);
      records.push(
        ['GNU.sparse.major', '1'],
        ['GNU.sparse.minor', '0'],
        ['GNU.sparse.name', e.name],
        ['GNU.sparse.realsize', String(size)],
      );
      const slash = e.name.lastIndexOf('/');
      h.name = `${e.name.slice(0, slash + 1)}GNUSparseFile.0/${e.name.slice(slash + 1)}`;
      h.size = prefix.length + extents.reduce((n, [s, end]) => n + end - s, 0);
    } else {
      extents = size ? [[0, size]] : [];
      h.size = size;
    }
    await this.#headers(h, records, e.name);
    const raw = this.#pendingHeader!;
    this.#pendingHeader = undefined;

    this.#checkOpen();
    const fh = await this.k.fs.open(bytes(e.path), C.O_RDONLY | C.O_NOFOLLOW);
    try {
      await new Promise<void>((resolve, reject) => {
        const entry = this.pack.entry as unknown as (h: object, cb: (err?: Error | null) => void) => NodeJS.WritableStream & { destroy(e: Error): void };
        const stream = entry.call(this.pack, { type: 'file', size: h.size, raw }, (err) => (err ? reject(err) : resolve()));
        stream.on('error', reject);
        // Back-pressure: wait for the stream to drain before reading more.
        const write = (b: Buffer) =>
          new Promise<void>((ok) => (stream.write(b) ? ok() : stream.once('drain', () => ok())));
        let sent = 0;
        const writeAll = async () => {
          if (prefix) await write(prefix);
          sent = prefix?.length ?? 0;
          try {
            for (const [start, end] of extents!) {
              for (let at = start; at < end; ) {
                const buf = Buffer.allocUnsafe(Math.min(CHUNK, end - at));
                const { bytesRead } = await fh.read(buf, 0, buf.length, at);
                if (!bytesRead) throw new Error('it shrank while being read');
                this.#checkOpen();
                await write(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead));
                sent += bytesRead;
                at += bytesRead;
                this.progress.bytes += bytesRead;
              }
            }
          } catch (err) {
            if (err instanceof ArchiveClosed) throw err;
            // The header is out: the entry keeps its size, zeros after what
            // was read, and the archive goes on, as GNU tar does.
            this.report.error(`cannot read '${display(e.path)}': ${this.#explain(err)}; padded with zeros`);
            for (let left = h.size - sent; left > 0; left -= CHUNK) await write(Buffer.alloc(Math.min(CHUNK, left)));
          }
          stream.end();
        };
        writeAll().catch((err) => {
          stream.destroy(err);
          reject(err);
        });
      });
    } finally {
      await fh.close();
    }
  }
}

/** The archive's stream failed under us; the error is the stream's. */
export class ArchiveClosed extends Error {
  constructor() {
    super('the archive stream is closed');
  }
}

/** Makes a tar-stream pack push our headers (see headers.ts) instead of its own. */
export function useOwnHeaders(pack: Pack): void {
  const p = pack as unknown as { _encode(h: { raw?: Buffer }): void; push(b: Buffer): boolean };
  const encode = p._encode.bind(p);
  p._encode = (h) => (h.raw ? void p.push(h.raw) : encode(h));
}

/** GNU tar's record: 20 blocks of 512 bytes, the unit of tapes and of `tar -b`. */
export const RECORD_SIZE = 10240;

/**
 * Passes an archive through and ends it with zeros up to a whole record, as
 * GNU tar does (before any compression), so that readers that read whole
 * records (tar -b 20 from a pipe, tapes) find the last one complete.
 */
export function padToRecord(): Transform {
  let length = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      length += chunk.length;
      done(null, chunk);
    },
    flush(done) {
      const short = (RECORD_SIZE - (length % RECORD_SIZE)) % RECORD_SIZE;
      done(null, short ? Buffer.alloc(short) : undefined);
    },
  });
}

/** uid -> name and gid -> name from the image's /etc/passwd and /etc/group. */
export async function ownerNames(k: Kernel, root: string, warn: (message: string) => void) {
  const table = async (file: string) => {
    const map = new Map<number, string>();
    // Inside the image, as in a chroot: /etc/passwd -> /usr/lib/passwd is the image's own.
    const text = await resolveInImage(k, root, `/etc/${file}`, true)
      .then((at) => k.fs.readFile(at, 'utf8'))
      .catch((e: Error) => {
        warn(`--owner-names: no /etc/${file} in the image (${(e as { code?: string }).code ?? e.message}): its ids go as numbers`);
        return '';
      });
    for (const line of text.split('\n')) {
      const [name, , id] = line.split(':');
      if (name && id && /^\d+$/.test(id) && !map.has(Number(id))) map.set(Number(id), name);
    }
    return map;
  };
  return { users: await table('passwd'), groups: await table('group') };
}
