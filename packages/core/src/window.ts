// Buffers in the window, the memory shared with the kernel process.  A
// system call's pointer arguments are window addresses: buffer.address.
import type { Kernel } from './kernel';
import type { NativeKernel } from './native';

/** Part of the window: where a call reads or writes. */
export interface WindowRegion {
  /** Its address, to pass to a system call. */
  readonly address: number;
  /** Its bytes (no copy). */
  readonly bytes: Buffer;
  readonly size: number;
}

/** The `size` bytes at `at` in `buf`. */
export function region(buf: WindowRegion, at: number, size: number): WindowRegion {
  return { address: buf.address + at, bytes: buf.bytes.subarray(at, at + size), size };
}

export class WindowBuffer implements WindowRegion {
  /** Its address, to pass to a system call. */
  readonly address: number;
  /** Its bytes, as a Buffer over the window (no copy). */
  readonly bytes: Buffer;
  #native: NativeKernel | undefined;
  readonly #onFree: (() => void) | undefined;

  constructor(
    kernel: Kernel,
    native: NativeKernel,
    readonly offset: number,
    readonly size: number,
    onFree?: () => void,
  ) {
    this.#native = native;
    this.#onFree = onFree;
    this.address = kernel.windowBase + offset;
    this.bytes = kernel.memory.subarray(offset, offset + size);
  }

  /** Writes s, NUL-terminated, at the start; returns the address. */
  cstring(s: string | Buffer): number {
    const n = typeof s === 'string' ? this.bytes.write(s, 0, 'utf8') : s.copy(this.bytes, 0);
    this.bytes[n] = 0;
    return this.address;
  }

  free(): void {
    if (!this.#native) return;
    this.#native.free(this.offset);
    this.#native = undefined;
    this.#onFree?.();
  }
}

/** The size of s as a NUL-terminated UTF-8 string. */
export function cstringSize(s: string | Buffer): number {
  return (typeof s === 'string' ? Buffer.byteLength(s, 'utf8') : s.length) + 1;
}
