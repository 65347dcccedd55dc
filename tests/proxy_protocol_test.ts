import assert from "node:assert/strict";
import {
  parseProxyHeader,
  ProxyProtocolError,
  V2_SIGNATURE,
} from "../lib/sockets/proxy_protocol.ts";
import {
  bothModes,
  readBytes,
  scrape,
  startServer,
  text,
  total,
  utf8,
  writeAll,
} from "./helpers.ts";

/** Builds a v2 header: version/command byte, family/transport byte, address block, TLVs. */
function v2(command: number, familyTransport: number, addresses: number[], tlvs: number[] = []) {
  const body = [...addresses, ...tlvs];
  return new Uint8Array([
    ...V2_SIGNATURE,
    0x20 | command,
    familyTransport,
    body.length >> 8,
    body.length & 0xff,
    ...body,
  ]);
}
const tlv = (type: number, value: string) => [type, 0, value.length, ...utf8(value)];
const INET = [192, 168, 0, 1, 192, 168, 0, 11, 0xdc, 0x04, 0x01, 0xbb]; // :56324 -> :443

Deno.test("parseProxyHeader() reads the specification's v1 examples", () => {
  const tcp4 = parseProxyHeader(utf8("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /"))!;
  assert.equal(tcp4.version, 1);
  assert.equal(tcp4.command, "proxy");
  assert.deepEqual(tcp4.source, { transport: "tcp", hostname: "192.168.0.1", port: 56324 });
  assert.deepEqual(tcp4.destination, { transport: "tcp", hostname: "192.168.0.11", port: 443 });
  assert.equal(tcp4.length, 47);

  const worst = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff " +
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
  assert.equal(worst.length, 104);
  const tcp6 = parseProxyHeader(utf8(worst))!;
  assert.equal(tcp6.source?.hostname, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
  assert.equal(tcp6.source?.port, 65535);

  const unknown = parseProxyHeader(utf8("PROXY UNKNOWN\r\n"))!;
  assert.equal(unknown.command, "local");
  assert.equal(unknown.source, undefined);
  const unknownLong = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff " +
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
  assert.equal(unknownLong.length, 107);
  assert.equal(parseProxyHeader(utf8(unknownLong))?.length, 107);
});

Deno.test("parseProxyHeader() waits for more bytes while a header may still be valid", () => {
  for (const partial of ["P", "PROXY", "PROXY TCP4 1.2.3.4", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"]) {
    assert.equal(parseProxyHeader(utf8(partial)), undefined, partial);
  }
  assert.equal(parseProxyHeader(new Uint8Array(0)), undefined);
  assert.equal(parseProxyHeader(V2_SIGNATURE.subarray(0, 5)), undefined);
  assert.equal(parseProxyHeader(v2(1, 0x11, INET).subarray(0, 20)), undefined);
});

Deno.test("parseProxyHeader() reads v2 PROXY, LOCAL, IPv6, UNSPEC and UNIX headers with TLVs", () => {
  const inet = parseProxyHeader(
    v2(1, 0x11, INET, [...tlv(0x01, "h2"), ...tlv(0x02, "example.com"), ...tlv(0x04, "")]),
  )!;
  assert.equal(inet.version, 2);
  assert.equal(inet.command, "proxy");
  assert.deepEqual(inet.source, { transport: "tcp", hostname: "192.168.0.1", port: 56324 });
  assert.deepEqual(inet.destination, { transport: "tcp", hostname: "192.168.0.11", port: 443 });
  assert.equal(text(inet.tlvs.get(0x01)!), "h2");
  assert.equal(text(inet.tlvs.get(0x02)!), "example.com");
  assert.equal(inet.tlvs.get(0x04)!.length, 0);
  assert.equal(inet.length, 16 + 12 + 5 + 14 + 3);

  const local = parseProxyHeader(v2(0, 0x00, []))!;
  assert.equal(local.command, "local");
  assert.equal(local.length, 16);
  // A LOCAL header may still carry addresses; they are ignored.
  assert.equal(parseProxyHeader(v2(0, 0x11, INET))?.command, "local");

  const six = [...new Array(15).fill(0), 1, 0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), 0x05];
  const inet6 = parseProxyHeader(v2(1, 0x21, [...six, 0x30, 0x39, 0x00, 0x50]))!;
  assert.deepEqual(inet6.source, { transport: "tcp", hostname: "::1", port: 12345 });
  assert.equal(inet6.destination?.hostname, "2001:db8::5");

  assert.equal(parseProxyHeader(v2(1, 0x00, []))?.command, "local");
  assert.equal(parseProxyHeader(v2(1, 0x31, new Array(216).fill(0)))?.source, undefined);
});

const MALFORMED: [string, Uint8Array, RegExp][] = [
  ["plain data", utf8("hello\r\n"), /no PROXY protocol header/],
  ["lower-case v1", utf8("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), /no PROXY protocol header/],
  ["v1 without CR", utf8("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), /CRLF/],
  ["v1 too long", utf8("PROXY " + "x".repeat(120)), /longer than 107/],
  ["v1 bad family", utf8("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), /unknown v1 protocol family/],
  ["v1 bad address", utf8("PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n"), /bad TCP4 address/],
  ["v1 v6 in TCP4", utf8("PROXY TCP4 ::1 ::1 1 2\r\n"), /bad TCP4 address/],
  ["v1 bad port", utf8("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"), /bad port/],
  ["v1 leading zero", utf8("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"), /bad port/],
  ["v1 missing field", utf8("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), /malformed v1 header/],
  ["v2 bad signature", new Uint8Array([0x0d, 0x0a, 0x0d, 0x0a, 0x01]), /no PROXY protocol header/],
  ["v2 version 1", Object.assign(v2(1, 0x11, INET), { 12: 0x11 }), /unsupported v2 version 1/],
  ["v2 command 2", v2(2, 0x11, INET), /unknown v2 command 2/],
  ["v2 family 4", v2(1, 0x41, INET), /unknown v2 address family/],
  ["v2 short addresses", v2(1, 0x11, INET.slice(0, 8)), /too short/],
  ["v2 truncated TLV", v2(1, 0x11, INET, [0x01, 0x00]), /truncated v2 TLV/],
  ["v2 overrunning TLV", v2(1, 0x11, INET, [0x01, 0x00, 0x09, 0x41]), /overruns the header/],
  ["v2 too long", v2(1, 0x11, new Array(5000).fill(0)), /too long/],
];

for (const [name, bytes, message] of MALFORMED) {
  Deno.test(`parseProxyHeader() rejects ${name}`, () => {
    assert.throws(() => parseProxyHeader(bytes), (error: unknown) => {
      assert.ok(error instanceof ProxyProtocolError);
      assert.match(error.message, message);
      return true;
    });
  });
}

bothModes(
  "--proxy-protocol: the client's address from the header, bad headers rejected",
  async (dispatch) => {
    await using server = await startServer([
      "--workers",
      "2",
      "--dispatch",
      dispatch,
      "--proxy-protocol",
      "--log-level",
      "debug",
      "--metrics-port",
      "0",
    ]);
    {
      using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      await writeAll(conn, utf8("PROXY TCP4 203.0.113.7 192.0.2.1 40000 5555\r\nhello\n"));
      assert.equal(text(await readBytes(conn, 6)), "hello\n");
    }
    {
      using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      await writeAll(conn, v2(1, 0x11, [198, 51, 100, 9, 192, 0, 2, 1, 0x9c, 0x41, 0x15, 0xb3]));
      await writeAll(conn, utf8("v2 data\n"));
      assert.equal(text(await readBytes(conn, 8)), "v2 data\n");
    }
    await server.waitForLog(/Connection 1 from 203\.0\.113\.7:40000 to worker-\d/);
    await server.waitForLog(/Connection 2 from 198\.51\.100\.9:40001 to worker-\d/);
    for (const junk of ["GET / HTTP/1.0\r\n\r\n", "PROXY TCP4 1.2.3.4\n"]) {
      using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      await writeAll(conn, utf8(junk));
      assert.equal((await readBytes(conn, Infinity)).length, 0, "malformed header was served");
    }
    const metrics = await scrape(server.metricsPort!);
    assert.equal(metrics.get("echoserver_proxy_header_rejected_total"), 2);
    // The two good connections were accepted; the rejected ones never reached a handler.
    assert.equal(total(metrics, "echoserver_connections_accepted_total"), 2);
    await server.waitForLog(/rejected: no PROXY protocol header/);
  },
);
