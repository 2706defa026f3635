// @lkl-um/core: the Linux kernel as a library for Node.
//
//   const k = await Kernel.boot({ memory: '128M' });
//   await k.fs.writeFile('/hello', 'hi');
//   console.log(await k.sys.getpid());
//   await k.shutdown();
export { Kernel, MIN_MEMORY_MB, parseSize } from './kernel';
export { Disk, isFstabOnly, probeType, splitMountOptions, withCallerUmask } from './disk';
export type { AddDiskOptions, MountOptions, Partition } from './disk';
export type { Arg, BootOptions } from './kernel';
export { KernelError, errnoName, errnoMessage } from './errors';
export { KernelFs, FileHandle, Dir, parseFlags, toTimespec, CHUNK, DEPTH } from './fs';
export type { PathLike, OpenFlags, TimeLike, Data, RawDirent } from './fs';
export { Stats, BigIntStats, Dirent } from './stats';
export type { CpOptions } from './cp';
export type { StatFs } from './stats';
export type { Sys, SyscallName } from './sys';
export { WindowBuffer } from './window';
export { host } from './host';
export { locate } from './native';
export { SYSCALLS, ERRNO, CONSTANTS, STRUCTS, KERNEL_RELEASE } from './generated/abi';
export { openImage, createImage, resolveInImage } from './image';
export { lklfuseMountAt } from './host-mounts';
export type { ImageOptions, MountedImage } from './image';
export { Reporter, run, parseCommandLine, commandOutput, bytes, versionText, integerOption, MAX_ID, onInterrupt, EXIT_OK, EXIT_SOME_FAILED, EXIT_FATAL, EXIT_INTERRUPTED } from './cli';
export { Excluder, globToRegExp, hasGlob } from './glob';
export { dataExtents, SEEK_DATA, SEEK_HOLE } from './extents';
