#!/usr/bin/env bash
# Re-vendors each patched crate from crates.io, pristine, and applies its patch from patches/.
# Run from anywhere; needs curl, sha256sum, tar and patch. See vendor/README.md.
set -euo pipefail
cd "$(dirname "$0")"

# crate version sha256 (of the .crate crates.io serves; the same as Cargo.lock held before the patch)
CRATES=(
  "hyper 1.12.0 2c3e324da4c95177d6291d4c8730197c0d1822f8a9766814a4a44fa5ab797c9c"
  "h2 0.4.21 b634322c4924093fe6a6e05ecbe5717cd3c6014934455f4ae8e5cf14ba3264a8"
  "rustls 0.23.46 48e13bd8c0e9365c43cfa5c9e8f9ad49d3c8444926c9aac819e0e4dc503c8fdf"
  "rustls-acme 0.15.4 64f24daec4ed0dfe6327bcb2b8045bf1d1cb4835e4f824d4cf487140f4b0cee4"
)

for entry in "${CRATES[@]}"; do
  read -r name version sum <<<"$entry"
  archive="$(mktemp)"
  curl --fail --silent --show-error --location \
    "https://static.crates.io/crates/$name/$name-$version.crate" -o "$archive"
  echo "$sum  $archive" | sha256sum --check --quiet
  rm -rf "$name-$version"
  tar -xzf "$archive"
  rm -f "$archive"
  patch --directory "$name-$version" --strip 1 --quiet < "patches/$name-$version.patch"
  echo "vendored $name $version with patches/$name-$version.patch"
done
