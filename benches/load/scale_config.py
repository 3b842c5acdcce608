#!/usr/bin/env python3
"""Writes a Portcullis config with many routes and many certificates, for scale.sh.

    scale_config.py --routes N --certs M --dir DIR --upstream-port P --https-port P --http-port P

The config is benches/load/portcullis.toml's job (the same two routes that the load clients use,
`localhost` and `127.0.0.1`, with the certificate in DIR/tls) plus N - 2 further routes and
M - 1 further certificates:

- routes: hosts `h<i>.scale.test`, four path prefixes each (`/`, `/api`, `/api/v2/`, `/static`),
  so a host has as many routes as a typical application and the table grows in both directions;
- certificates: one per name `c<i>.scale.test`, each its own self-signed ECDSA P-256
  certificate (one shared key: generating 10,000 keys would only slow the set-up), plus one
  `*.scale.test` certificate covering every route host. Certificates already in DIR/certs are
  reused.

Needs the `cryptography` package (Debian: python3-cryptography).
"""

import argparse
import datetime
import os
import pathlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PREFIXES = ["/", "/api", "/api/v2/", "/static"]


def self_signed(key, name):
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )


def write_certificates(certs_dir: pathlib.Path, count: int):
    """`count` certificate files (the wildcard first) and the shared key, reused when present."""
    certs_dir.mkdir(parents=True, exist_ok=True)
    key_path = certs_dir / "key.pem"
    if key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    os.chmod(key_path, 0o600)
    names = ["*.scale.test"] + [f"c{i}.scale.test" for i in range(count - 1)]
    paths = []
    for i, name in enumerate(names):
        path = certs_dir / f"cert{i}.pem"
        if not path.exists():
            path.write_bytes(self_signed(key, name).public_bytes(serialization.Encoding.PEM))
        paths.append(path)
    return key_path, paths


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, required=True)
    parser.add_argument("--certs", type=int, required=True)
    parser.add_argument("--dir", type=pathlib.Path, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--https-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True, help="config file to write")
    args = parser.parse_args()
    if args.routes < 2 or args.certs < 1:
        parser.error("--routes must be at least 2 and --certs at least 1")

    work = args.dir
    lines = [
        'environment = "bench"',
        "[server]",
        "workers = 1",
        "allow_root = true  # as in portcullis.toml: the bench may run as root",
        "[listen]",
        f'http = "127.0.0.1:{args.http_port}"',
        f'https = "127.0.0.1:{args.https_port}"',
        "[hsts]",
        "max_age = 63072000",
        "include_subdomains = false",
        "[networks]",
        'bench = ["127.0.0.0/8"]',
        "[upstreams.app]",
        'environment = "bench"',
        f'addrs = ["127.0.0.1:{args.upstream_port}"]',
        "[log]",
        f'dir = "{work}/logs"',
        "retention_days = 30",
        "[limits]",
        "max_connections = 20000",
        'idle_timeout = "120s"',
        "",
        "[[tls.certificates]]",
        f'cert = "{work}/tls/cert.pem"',
        f'key = "{work}/tls/key.pem"',
    ]
    if args.certs > 1 or args.routes > 2:
        key_path, cert_paths = write_certificates(work / "certs", max(args.certs - 1, 1))
        for path in cert_paths:
            lines += ["[[tls.certificates]]", f'cert = "{path}"', f'key = "{key_path}"']
    for host in ["localhost", "127.0.0.1"]:
        lines += ["[[routes]]", f'host = "{host}"', 'upstream = "app"']
    for i in range(args.routes - 2):
        host, prefix = f"h{i // len(PREFIXES)}.scale.test", PREFIXES[i % len(PREFIXES)]
        lines += ["[[routes]]", f'host = "{host}"', f'path_prefix = "{prefix}"', 'upstream = "app"']
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
