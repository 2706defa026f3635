// kernel.sys: every system call of the kernel's table, by name, generated
// from its own headers.  Arguments are numbers or bigints (pointers are
// window addresses); a negative result is thrown as a KernelError.
import { check } from './errors';
import { SYSCALLS } from './generated/abi';
import type { Arg, Kernel } from './kernel';

export type SyscallName = keyof typeof SYSCALLS;
export type Sys = { readonly [K in SyscallName]: (...args: Arg[]) => Promise<number> };

export function makeSys(kernel: Kernel): Sys {
  const sys: Record<string, (...args: Arg[]) => Promise<number>> = {};
  for (const [name, nr] of Object.entries(SYSCALLS)) {
    sys[name] = (...args: Arg[]) => kernel.call(nr, ...args).then((ret) => check(ret, name));
  }
  return Object.freeze(sys) as Sys;
}
