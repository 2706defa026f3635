// kernel.fs.cp: node:fs/promises' cp, inside the kernel.  The same checks
// and error codes (ERR_FS_CP_*), the same options; names are handled by
// their bytes, so names that are not UTF-8 copy too.  One difference, for
// disk images: a device node is made anew (mknod), where node:fs would
// read the device.
import { posix } from 'node:path';
import { KernelError, nodeFsError } from './errors';
import type { BigIntStats } from './stats';
import type { KernelFs, PathLike } from './fs';

export interface CpOptions {
  /** Copy directories and what is in them. */
  recursive?: boolean;
  /** Replace what is at the destination (default true). */
  force?: boolean;
  /** Without force: fail, rather than skip, where the destination exists. */
  errorOnExist?: boolean;
  /** Copy what symlinks point at, not the links. */
  dereference?: boolean;
  /** Keep the files' access and modification times. */
  preserveTimestamps?: boolean;
  /** Keep symlinks' relative targets as they are (else made absolute, as node:fs does). */
  verbatimSymlinks?: boolean;
  /** copyFile's mode (COPYFILE_EXCL ...). */
  mode?: number;
  /** Copies what it says true of (a directory's contents only if it says true of the directory). */
  filter?: (src: string, dest: string) => boolean | Promise<boolean>;
}

const EEXIST = 17;
const EISDIR = 21;
const EINVAL = 22;
const ENOTDIR = 20;

/* A failure of cp's own, as node:fs reports it: its code, and the errno it stands for. */
function cpError(code: string, errno: number, message: string, src: string, dest: string): Error {
  return nodeFsError(code, errno, `${code}: ${message}, cp '${src}' -> '${dest}'`, 'cp', src, dest);
}

/* Paths as latin1 strings: every byte one character, so path.posix works on names that are not UTF-8. */
const bytesOf = (path: PathLike): string =>
  Buffer.isBuffer(path) ? path.toString('latin1') : Buffer.from(typeof path === 'string' ? path : decodeURIComponent(path.pathname)).toString('latin1');
const asPath = (bytes: string): Buffer => Buffer.from(bytes, 'latin1');
const shown = (bytes: string): string => asPath(bytes).toString('utf8');

export async function cp(fs: KernelFs, source: PathLike, destination: PathLike, o: CpOptions = {}): Promise<void> {
  const src = bytesOf(source);
  const dest = bytesOf(destination);
  const statOf = (path: string) => (o.dereference ? fs.stat(asPath(path), { bigint: true }) : fs.lstat(asPath(path), { bigint: true }));
  const existing = (path: string) =>
    statOf(path).catch((e: KernelError) => (e.code === 'ENOENT' ? undefined : Promise.reject(e)));

  const srcStat = await statOf(src);
  const destStat = await existing(dest);
  const fail = (code: string, errno: number, message: string) => cpError(code, errno, message, shown(src), shown(dest));
  if (destStat && destStat.dev === srcStat.dev && destStat.ino === srcStat.ino) {
    throw fail('ERR_FS_CP_EINVAL', EINVAL, 'src and dest cannot be the same');
  }
  if (srcStat.isDirectory() && (await isInside(fs, src, dest))) {
    throw fail('ERR_FS_CP_EINVAL', EINVAL, 'cannot copy a directory into itself');
  }

  const copy = async (from: string, to: string, st: BigIntStats): Promise<void> => {
    if (o.filter && !(await o.filter(shown(from), shown(to)))) return;
    const there = await existing(to);
    const failHere = (code: string, errno: number, message: string) => cpError(code, errno, message, shown(from), shown(to));
    if (st.isDirectory()) {
      if (!o.recursive) throw failHere('ERR_FS_EISDIR', EISDIR, 'the recursive option is needed to copy a directory');
      if (there && !there.isDirectory()) {
        throw failHere('ERR_FS_CP_DIR_TO_NON_DIR', EISDIR, 'cannot overwrite a non-directory with a directory');
      }
      if (!there) await fs.mkdir(asPath(to));
      for (const name of await fs.readdir(asPath(from), { encoding: 'buffer' })) {
        const child = posix.join(from, name.toString('latin1'));
        await copy(child, posix.join(to, name.toString('latin1')), await statOf(child));
      }
      // After the contents: a directory without write permission still takes them.
      if (!there) await fs.chmod(asPath(to), Number(st.mode & 0o7777n));
      return;
    }
    if (there?.isDirectory()) {
      throw failHere('ERR_FS_CP_NON_DIR_TO_DIR', ENOTDIR, 'cannot overwrite a directory with a non-directory');
    }
    if (there) {
      if (!(o.force ?? true)) {
        if (o.errorOnExist) throw failHere('ERR_FS_CP_EEXIST', EEXIST, 'the destination exists');
        return;
      }
      await fs.unlink(asPath(to));
    }
    if (st.isFile()) {
      await fs.copyFile(asPath(from), asPath(to), o.mode);
    } else if (st.isSymbolicLink()) {
      let target = (await fs.readlink(asPath(from), { encoding: 'buffer' })).toString('latin1');
      if (!o.verbatimSymlinks && !posix.isAbsolute(target)) target = posix.resolve(posix.dirname(from), target);
      await fs.symlink(asPath(target), asPath(to));
      return;
    } else if (st.isCharacterDevice() || st.isBlockDevice()) {
      await fs.mknod(asPath(to), Number(st.mode), st.rdev);
    } else if (st.isFIFO()) {
      throw failHere('ERR_FS_CP_FIFO_PIPE', EINVAL, 'cannot copy a FIFO');
    } else if (st.isSocket()) {
      throw failHere('ERR_FS_CP_SOCKET', EINVAL, 'cannot copy a socket');
    } else {
      throw failHere('ERR_FS_CP_UNKNOWN', EINVAL, 'cannot copy a file of unknown type');
    }
    const mode = Number(st.mode & 0o7777n);
    if (o.preserveTimestamps) {
      if (!(mode & 0o200)) await fs.chmod(asPath(to), mode | 0o200); // to set its times
      await fs.utimes(asPath(to), st.atimeNs, st.mtimeNs);
    }
    await fs.chmod(asPath(to), mode);
  };
  await copy(src, dest, srcStat);
}

/* Whether dest is src or lies below it, once both are resolved (dest need not exist yet). */
async function isInside(fs: KernelFs, src: string, dest: string): Promise<boolean> {
  const real = async (path: string): Promise<string> => {
    try {
      return (await fs.realpath(asPath(path), { encoding: 'buffer' })).toString('latin1');
    } catch (e) {
      if ((e as KernelError).code !== 'ENOENT' || posix.dirname(path) === path) throw e;
      return posix.join(await real(posix.dirname(path)), posix.basename(path));
    }
  };
  const from = await real(src);
  const to = await real(dest);
  return to === from || to.startsWith(from === '/' ? '/' : `${from}/`);
}
