// Tar headers, written here rather than by tar-stream, which streams them:
// pax records must carry binary values (extended attributes), GNU archives
// need ././@LongLink entries, and a reproducible archive cannot name its pax
// headers after a pid.  The formats are POSIX.1-2001 pax and GNU tar's.

export interface TarHeader {
  name: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number; // seconds
  typeflag: string;
  linkname?: string;
  uname?: string;
  gname?: string;
  devmajor?: number;
  devminor?: number;
}

const BLOCK = 512;

function octal(buf: Buffer, at: number, width: number, value: number): void {
  const digits = value.toString(8);
  if (value >= 0 && digits.length < width) {
    buf.write(digits.padStart(width - 1, '0'), at, 'ascii');
    return;
  }
  // Too big for octal, or negative (a time before 1970): GNU's base-256,
  // two's complement, which GNU tar and others read.
  let v = BigInt(value);
  for (let i = width - 1; i > 0; i--) {
    buf[at + i] = Number(v & 0xffn);
    v >>= 8n;
  }
  buf[at] = value < 0 ? 0xff : 0x80;
}

/** Whether a name fits a ustar header as it is: ASCII, and short enough. */
export function fitsUstar(name: string): { name: string; prefix: string } | undefined {
  if (!/^[\x20-\x7e]*$/.test(name)) return undefined;
  if (name.length <= 100) return { name, prefix: '' };
  // Split at a slash that leaves a name: not a directory's trailing one.
  for (let i = name.lastIndexOf('/', Math.min(155, name.length - 2)); i > 0; i = name.lastIndexOf('/', i - 1)) {
    if (name.length - i - 1 <= 100) return { name: name.slice(i + 1), prefix: name.slice(0, i) };
  }
  return undefined;
}

/** Whether a link target fits a ustar header: it has no prefix field. */
export function fitsLinkname(name: string): boolean {
  return /^[\x20-\x7e]*$/.test(name) && name.length <= 100;
}

/** A stand-in for a name a pax record carries: ASCII, cut to fit. */
export function asciiStandIn(name: string): string {
  const ascii = name.replace(/[^\x20-\x7e]/g, '_');
  return ascii.length <= 100 ? ascii : ascii.slice(ascii.length - 100);
}

/** One 512-byte header block. */
export function header(h: TarHeader, gnu: boolean): Buffer {
  const buf = Buffer.alloc(BLOCK);
  const split = gnu ? undefined : fitsUstar(h.name);
  // Names are byte strings (latin1: a character per byte), see export.ts.
  buf.write(split ? split.name : h.name.slice(0, 100), 0, 100, 'latin1');
  octal(buf, 100, 8, h.mode & 0o7777);
  octal(buf, 108, 8, h.uid);
  octal(buf, 116, 8, h.gid);
  octal(buf, 124, 12, h.size);
  octal(buf, 136, 12, h.mtime);
  buf.fill(0x20, 148, 156); // the checksum counts itself as spaces
  buf.write(h.typeflag, 156, 1, 'ascii');
  if (h.linkname) buf.write(h.linkname, 157, 100, 'latin1');
  buf.write(gnu ? 'ustar  \0' : 'ustar\x0000', 257, 8, 'latin1');
  if (h.uname) buf.write(h.uname, 265, 32, 'utf8');
  if (h.gname) buf.write(h.gname, 297, 32, 'utf8');
  octal(buf, 329, 8, h.devmajor ?? 0);
  octal(buf, 337, 8, h.devminor ?? 0);
  if (split?.prefix) buf.write(split.prefix, 345, 155, 'latin1');
  let sum = 0;
  for (const b of buf) sum += b;
  buf.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
  return buf;
}

/** pax extended header records: "LEN key=value\n", values as bytes. */
export function paxRecords(records: [string, string | Buffer][]): Buffer {
  const parts = records.map(([key, value]) => {
    const body = Buffer.concat([Buffer.from(` ${key}=`), Buffer.from(value as Buffer), Buffer.from('\n')]);
    // The length counts its own digits.
    let digits = String(body.length).length;
    while (String(body.length + digits).length > digits) digits++;
    return Buffer.concat([Buffer.from(String(body.length + digits)), body]);
  });
  return Buffer.concat(parts);
}
