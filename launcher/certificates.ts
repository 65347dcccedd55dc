/**
 * Test certificates, made with `openssl` when asked: a CA, two server certificates it signed
 * (for `localhost`, 127.0.0.1 and ::1; two, to watch a rotation) and a client certificate (for
 * mutual TLS). Every run makes its own, in a folder the caller removes.
 *
 * Runs in whatever process starts servers (a test, the benchmark); never inside the server.
 *
 * @module
 */

/** Paths of the PEM files made by {@linkcode makeCertificates}. */
export interface Certificates {
  /** The folder holding them all. */
  dir: string;
  ca: string;
  /** Server certificate and key with the subject `CN=server-a`. */
  serverA: { cert: string; key: string };
  /** Another, `CN=server-b`, for rotations. */
  serverB: { cert: string; key: string };
  /** A client certificate, `CN=client`, for mutual TLS. */
  client: { cert: string; key: string };
}

/**
 * Whether `openssl` can be run here.
 *
 * @returns True if it ran.
 */
export function haveOpenssl(): boolean {
  try {
    return new Deno.Command("openssl", { args: ["version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

async function openssl(dir: string, args: string[]): Promise<void> {
  const output = await new Deno.Command("openssl", {
    args,
    cwd: dir,
    stdout: "null",
    stderr: "piped",
  })
    .output();
  if (!output.success) {
    throw new Error(`openssl ${args[0]} failed: ${new TextDecoder().decode(output.stderr)}`);
  }
}

/**
 * Makes a CA, two server certificates and a client certificate (P-256 keys, valid 2 days).
 *
 * @param dir An empty folder to make them in.
 * @returns Their paths.
 */
export async function makeCertificates(dir: string): Promise<Certificates> {
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await openssl(dir, [
    "req",
    "-x509",
    ...ec,
    "-keyout",
    "ca.key",
    "-out",
    "ca.crt",
    "-days",
    "2",
    "-subj",
    "/CN=test-ca",
  ]);
  const sign = async (name: string, subject: string, extensions: string) => {
    await Deno.writeTextFile(`${dir}/${name}.ext`, extensions);
    await openssl(dir, [
      "req",
      ...ec,
      "-keyout",
      `${name}.key`,
      "-out",
      `${name}.csr`,
      "-subj",
      subject,
    ]);
    await openssl(dir, [
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      `${name}.crt`,
      "-days",
      "2",
      "-extfile",
      `${name}.ext`,
    ]);
    return { cert: `${dir}/${name}.crt`, key: `${dir}/${name}.key` };
  };
  const server = "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n" +
    "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n";
  return {
    dir,
    ca: `${dir}/ca.crt`,
    serverA: await sign("server-a", "/CN=server-a", server),
    serverB: await sign("server-b", "/CN=server-b", server),
    client: await sign(
      "client",
      "/CN=client",
      "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
    ),
  };
}
