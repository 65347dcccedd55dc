import assert from "node:assert/strict";
import { copyBytes, indexOfByte } from "./bytes.ts";

Deno.test("indexOfByte() agrees with indexOf at every alignment, start and position", () => {
  const backing = new Uint8Array(70_000).fill(0x61);
  for (const offset of [0, 1, 2, 3, 5, 7]) {
    for (const size of [10, 1023, 1024, 1025, 4096, 65_536]) {
      for (const at of [-1, 0, 3, 1000, 1023, 1024, size - 1]) {
        const chunk = backing.subarray(offset, offset + size);
        chunk.fill(0x61);
        // Bytes that differ from the one looked for by one bit.
        chunk[Math.min(5, size - 1)] = 0x0b;
        chunk[Math.min(600, size - 1)] = 0x8a;
        if (at >= 0 && at < size) chunk[at] = 0x0a;
        for (const from of [0, 1, 5, 300, 1001, size - 1, size]) {
          assert.equal(
            indexOfByte(chunk, 0x0a, from),
            chunk.indexOf(0x0a, from),
            `offset ${offset}, size ${size}, at ${at}, from ${from}`,
          );
        }
      }
    }
  }
});

Deno.test("indexOfByte() agrees with indexOf on random chunks", () => {
  let seed = 7;
  const random = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  for (let trial = 0; trial < 2000; trial++) {
    const size = 1 + Math.floor(random() * 8000);
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i++) bytes[i] = random() < 0.0005 ? 0x0a : Math.floor(random() * 256);
    const from = Math.floor(random() * size);
    assert.equal(indexOfByte(bytes, 0x0a, from), bytes.indexOf(0x0a, from), `trial ${trial}`);
  }
});

Deno.test("copyBytes() copies: later changes to the source do not show", () => {
  const source = new Uint8Array(100).fill(1);
  const small = copyBytes(source.subarray(0, 10));
  const large = copyBytes(new Uint8Array(5000).fill(2));
  source.fill(9);
  assert.deepEqual([...small], new Array(10).fill(1));
  assert.equal(large.length, 5000);
  assert.ok(large.every((b) => b === 2));
});

Deno.test("copyBytes() cuts small copies from one slab and never overlaps them", () => {
  const copies = Array.from(
    { length: 500 },
    (_, i) => copyBytes(new Uint8Array(i % 37 + 1).fill(i % 251)),
  );
  copies.forEach((copy, i) => {
    assert.equal(copy.length, i % 37 + 1);
    assert.ok(copy.every((b) => b === i % 251), `copy ${i} was overwritten`);
  });
  assert.equal(copies[1]!.buffer, copies[2]!.buffer, "small copies should share a slab");
});
