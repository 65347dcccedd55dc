import assert from "node:assert/strict";
import { canFindByte, canSendNow, descriptorOf, findByte, sendNow } from "./libc.ts";

// The test task grants --allow-ffi, as the server's launch flags do: the fast paths must be in
// use here, or the tests of what relies on them would pass on the fallbacks alone.
Deno.test({
  name: "libc: the fast paths are available with --allow-ffi on Linux",
  ignore: Deno.build.os !== "linux",
  fn() {
    assert.ok(canSendNow());
    assert.ok(canFindByte());
  },
});

Deno.test({
  name: "libc: descriptorOf() finds Deno's socket descriptor, and sendNow() writes through it",
  ignore: Deno.build.os !== "linux",
  async fn() {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    using client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
    using server = await listener.accept();
    const fd = descriptorOf(server);
    assert.ok(fd !== undefined && fd > 2, "no descriptor: Deno's internal symbol moved?");
    assert.equal(sendNow(fd, new TextEncoder().encode("now")), 3);
    const buffer = new Uint8Array(8);
    assert.equal(await client.read(buffer), 3);
    assert.equal(new TextDecoder().decode(buffer.subarray(0, 3)), "now");
    // A full socket takes part or nothing, and says so instead of blocking.
    const big = new Uint8Array(64 * 1024 * 1024);
    const taken = sendNow(fd, big);
    assert.ok(taken < big.length, `the kernel took all ${taken} bytes at once`);
  },
});

Deno.test({
  name: "libc: findByte() finds the first match, or -1",
  ignore: Deno.build.os !== "linux",
  fn() {
    const bytes = new Uint8Array(100_000).fill(1);
    assert.equal(findByte(bytes, 0x0a), -1);
    bytes[77_777] = 0x0a;
    bytes[90_000] = 0x0a;
    assert.equal(findByte(bytes, 0x0a), 77_777);
    assert.equal(findByte(bytes.subarray(77_778), 0x0a), 90_000 - 77_778);
  },
});

Deno.test({
  name: "libc: a hot caller of findByte() stays optimised (no deoptimisation loop)",
  ignore: Deno.build.os !== "linux",
  async fn() {
    // A `usize` parameter takes a BigInt in optimised code: passing a number deoptimised every
    // caller, which V8 then recompiled, again and again (memcache's parser, under load).
    const script = `
      import { canFindByte, findByte } from ${
      JSON.stringify(new URL("./libc.ts", import.meta.url).href)
    };
      if (!canFindByte()) throw new Error("no memchr");
      const bytes = new Uint8Array(4096); bytes[4000] = 10;
      function hot(b) { return findByte(b, 10); }
      let sum = 0;
      for (let i = 0; i < 200000; i++) sum += hot(bytes);
      if (sum !== 4000 * 200000) throw new Error("wrong index");
    `;
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-ffi", "--v8-flags=--trace-deopt", "-"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const writer = output.stdin.getWriter();
    await writer.write(new TextEncoder().encode(script));
    await writer.close();
    const { success, stdout, stderr } = await output.output();
    const text = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
    assert.ok(success, text.slice(-2000));
    // The FFI call's wrapper, or the caller it is inlined in, bails out for want of a BigInt.
    const loops = text.split("\n").filter((line) => line.includes("reason: not a BigInt"));
    assert.deepEqual(loops, [], "findByte's callers were deoptimised");
  },
});
