// Errors the way Node reports them: a code (ENOENT), the errno, the system
// call and the path, and a message like node:fs's.
import { getSystemErrorMap } from 'node:util';
import { ERRNO, ERRNO_MEANING } from './generated/abi';

const ESHUTDOWN = 108;
const nameOf = new Map<number, string>();
for (const [name, value] of Object.entries(ERRNO)) {
  // Aliases (EWOULDBLOCK, EDEADLOCK) come after the names they alias.
  if (!nameOf.has(value)) nameOf.set(value, name);
}

let messages: Map<number, [string, string]> | undefined;

/** The errno name of a (positive) error number: 2 -> 'ENOENT'. */
export function errnoName(errno: number): string {
  return nameOf.get(errno) ?? `E${errno}`;
}

/*
 * File systems give two errnos a meaning of their own (EFSBADCRC and
 * EFSCORRUPTED in ext4, xfs, btrfs, f2fs ...), which is what they mean here.
 */
const FS_MEANING = new Map<number, string>([
  [ERRNO.EBADMSG, 'bad checksum: the filesystem is damaged'],
  [ERRNO.EUCLEAN, 'structure needs cleaning: the filesystem is damaged'],
]);

/** What node:fs would say for it: 2 -> 'no such file or directory'. */
export function errnoMessage(errno: number): string {
  messages ??= getSystemErrorMap();
  const meaning = FS_MEANING.get(errno) ?? messages.get(-errno)?.[1] ?? ERRNO_MEANING[errno]?.toLowerCase();
  return meaning ?? 'unknown error';
}

/** An error from the kernel: what a node:fs call would throw. */
export class KernelError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly syscall: string;
  declare readonly path?: string;
  declare readonly dest?: string;

  constructor(errno: number, syscall: string, path?: string, dest?: string) {
    const code = errnoName(errno);
    const what = errno === ESHUTDOWN ? 'the kernel is gone (shut down, or its process died)' : errnoMessage(errno);
    let message = `${code}: ${what}, ${syscall}`;
    if (path !== undefined) message += ` '${path}'`;
    if (dest !== undefined) message += ` -> '${dest}'`;
    super(message);
    this.name = 'KernelError';
    this.code = code;
    // Node reports errno negated, as libuv does.
    this.errno = -errno;
    this.syscall = syscall;
    if (path !== undefined) Object.defineProperty(this, 'path', { value: path, enumerable: true });
    if (dest !== undefined) Object.defineProperty(this, 'dest', { value: dest, enumerable: true });
  }
}

/**
 * A KernelError of the library's own, told in a sentence of its own:
 * `path` (and `dest`) stay paths, for code to read.
 */
export function explainedError(errno: number, syscall: string, message: string, path?: string, dest?: string): KernelError {
  const e = new KernelError(errno, syscall, path, dest);
  e.message = message;
  return e;
}

/**
 * One of node:fs's own errors, which carry an ERR_FS_* code rather than
 * the errno's name (cp's checks, rm of a directory): the same fields.
 */
export function nodeFsError(code: string, errno: number, message: string, syscall: string, path: string, dest?: string): Error {
  return Object.assign(new Error(message), { code, errno: -errno, syscall, path, ...(dest === undefined ? {} : { dest }) });
}

/** Returns ret, or throws the KernelError a negative ret means. */
export function check(ret: number, syscall: string, path?: string, dest?: string): number {
  if (ret < 0 && ret > -4096) throw new KernelError(-ret, syscall, path, dest);
  return ret;
}
