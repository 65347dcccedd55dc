/**
 * The server's named shared memory: one `SharedArrayBuffer` per name, made the first time a
 * worker asks for it and handed to every worker that asks after (replacements included), for
 * as long as the server runs. It is how handlers on different workers share state that must
 * outlive any one worker (the `memcache` cache).
 *
 * The registry lives on the main thread (workers ask it with a `share` message); a lone worker
 * with no main thread (unit tests, `MemorySocket`) keeps its own.
 *
 * @module
 */

/** Largest buffer a handler may ask for: 64 GiB (the memory is committed only as it is used). */
export const MAX_SHARED_BYTES = 64 * 1024 ** 3;

/** Names are short and printable, so that they read well in errors and logs. */
const NAME = /^[\w.:-]{1,64}$/;

/** Named shared buffers. */
export class SharedBufferRegistry {
  #buffers = new Map<string, SharedArrayBuffer>();

  /**
   * The buffer of `name`, made zero-filled if it does not exist yet.
   *
   * @param name Its name (letters, digits, `_ . : -`, up to 64).
   * @param byteLength Its size; an existing buffer must have the same.
   * @returns The buffer.
   * @throws {RangeError} For a bad name or size, or a size that differs from the buffer's.
   */
  get(name: string, byteLength: number): SharedArrayBuffer {
    if (!NAME.test(name)) throw new RangeError(`bad shared buffer name '${name}'`);
    if (!Number.isSafeInteger(byteLength) || byteLength < 1 || byteLength > MAX_SHARED_BYTES) {
      throw new RangeError(
        `shared buffer '${name}': size must be from 1 to ${MAX_SHARED_BYTES} bytes`,
      );
    }
    const existing = this.#buffers.get(name);
    if (existing !== undefined) {
      if (existing.byteLength !== byteLength) {
        throw new RangeError(
          `shared buffer '${name}' exists with ${existing.byteLength} bytes, not ${byteLength}`,
        );
      }
      return existing;
    }
    const buffer = new SharedArrayBuffer(byteLength);
    this.#buffers.set(name, buffer);
    return buffer;
  }
}

/**
 * A `sharedBuffer` function with a registry of its own, for a worker that runs without a main
 * thread (a handler called directly, in tests or through `MemorySocket`).
 *
 * @returns The function; buffers are shared by the callers of this one function only.
 *
 * @example
 * ```ts
 * import { localSharedBuffers } from "./shared_buffers.ts";
 * const sharedBuffer = localSharedBuffers();
 * const a = await sharedBuffer("counts", 1024);
 * console.assert(a === await sharedBuffer("counts", 1024));
 * ```
 */
export function localSharedBuffers(): (
  name: string,
  byteLength: number,
) => Promise<SharedArrayBuffer> {
  const registry = new SharedBufferRegistry();
  return (name, byteLength) => {
    try {
      return Promise.resolve(registry.get(name, byteLength));
    } catch (error) {
      return Promise.reject(error);
    }
  };
}
