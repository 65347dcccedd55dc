import assert from "node:assert/strict";
import { answer, handler as hash, MAX_ROUNDS, sha256 } from "../lib/handlers/builtin/hash.ts";
import { MemorySocket } from "../lib/worker/memory_socket.ts";
import { bothModes, readBytes, startServer, text, utf8, writeAll } from "./helpers.ts";

async function native(data: Uint8Array): Promise<string> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", data.slice())).toHex();
}

Deno.test("sha256() (node:crypto) matches the FIPS 180-4 examples", () => {
  assert.equal(
    sha256(utf8("")).toHex(),
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
  );
  assert.equal(
    sha256(utf8("abc")).toHex(),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
  assert.equal(
    sha256(utf8("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")).toHex(),
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
  );
});

Deno.test("answer() iterates rounds and rejects out-of-range ones", async () => {
  let expected = sha256(utf8("abc"));
  for (let i = 1; i < 3; i++) expected = sha256(expected);
  assert.equal(answer(utf8("#3 abc")), expected.toHex());
  assert.equal(answer(utf8("#1 abc")), await native(utf8("abc")));
  assert.equal(answer(utf8("#x abc")), await native(utf8("#x abc")));
  assert.equal(answer(utf8(`#${MAX_ROUNDS + 1} abc`)), `ERR rounds must be 1 to ${MAX_ROUNDS}`);
  assert.equal(answer(utf8("#0 abc")), `ERR rounds must be 1 to ${MAX_ROUNDS}`);
});

Deno.test("hash answers each line, across chunk boundaries, and stops at quit", async () => {
  const socket = new MemorySocket(hash);
  for (const chunk of ["ab", "c\r\n", "\nx", "yz\nquit\nignored\n"]) socket.push(chunk);
  await socket.settled();
  assert.equal(socket.closeReason, "done");
  assert.deepEqual(socket.text.split("\n"), [
    await native(utf8("abc")),
    await native(utf8("")),
    await native(utf8("xyz")),
    "",
  ]);
});

bothModes("--handler hash serves the hash protocol end to end", async (dispatch) => {
  await using server = await startServer([
    "--workers",
    "2",
    "--dispatch",
    dispatch,
    "--handler",
    "hash",
  ]);
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  await writeAll(conn, utf8("abc\n#2 abc\n"));
  const reply = text(await readBytes(conn, 130)).split("\n");
  assert.equal(reply[0], await native(utf8("abc")));
  assert.equal(reply[1], sha256(sha256(utf8("abc"))).toHex());
});
