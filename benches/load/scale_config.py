#!/usr/bin/env python3
"""Grows a Portcullis config to many routes and many certificates, for compare.sh --routes/--certs.

    scale_config.py --config FILE --routes N --certs M --certs-dir DIR

Appends to FILE (compare.sh's rendered portcullis.toml, whose own routes and certificate the load
clients use, so the job stays the same) until it has N routes and M certificates:

- routes: hosts `h<i>.scale.test`, four path prefixes each (`/`, `/api`, `/api/v2/`, `/static`),
  so that the table grows in hosts and a host has as many routes as a typical application;
- certificates: one `*.scale.test` certificate covering every route host, then one per name
  `c<i>.scale.test`, each its own self-signed ECDSA P-256 certificate (one shared key:
  generating thousands of keys would only slow the set-up). Files already in DIR are reused.

Needs the `cryptography` package (Debian: python3-cryptography).
"""

import argparse
import datetime
import os
import pathlib
import re

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


def certificate_files(certs_dir: pathlib.Path, count: int):
    """The shared key and `count` certificate files (the wildcard first), made when missing."""
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
    parser.add_argument("--config", type=pathlib.Path, required=True)
    parser.add_argument("--routes", type=int, required=True, help="routes in all")
    parser.add_argument("--certs", type=int, required=True, help="certificates in all")
    parser.add_argument("--certs-dir", type=pathlib.Path, required=True)
    args = parser.parse_args()

    text = args.config.read_text()
    have_routes = len(re.findall(r"^\[\[routes\]\]", text, re.M))
    have_certs = len(re.findall(r"^\[\[tls\.certificates\]\]", text, re.M))
    extra_routes = max(args.routes - have_routes, 0)
    extra_certs = max(args.certs - have_certs, 0)
    if extra_routes and not extra_certs:
        extra_certs = 1  # the wildcard that covers the route hosts
    lines = []
    if extra_certs:
        key_path, cert_paths = certificate_files(args.certs_dir, extra_certs)
        for path in cert_paths:
            lines += ["[[tls.certificates]]", f'cert = "{path}"', f'key = "{key_path}"']
    for i in range(extra_routes):
        host, prefix = f"h{i // len(PREFIXES)}.scale.test", PREFIXES[i % len(PREFIXES)]
        lines += ["[[routes]]", f'host = "{host}"', f'path_prefix = "{prefix}"', 'upstream = "app"']
    with args.config.open("a") as config:
        config.write("\n# Added by scale_config.py\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
