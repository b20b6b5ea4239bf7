#!/bin/sh
# Copies the workspace's manifests into DEST with stub sources, so that the
# image build can compile every dependency in a layer that only changes when
# Cargo.toml or Cargo.lock change (what cargo-chef does, without cargo-chef).
#
#   skeleton.sh SRC DEST
#
# For each crate it keeps Cargo.toml and build.rs, and writes an empty
# src/lib.rs and a `fn main() {}` src/main.rs where the crate has those files,
# and a stub at every `path = "..."` of an explicit target. The stubs never
# reach the final binaries: the build stage removes them, copies the real
# sources and touches them, so cargo rebuilds the workspace crates.
set -eu
src=$1
dest=$2
mkdir -p "$dest"
cp "$src/Cargo.toml" "$src/Cargo.lock" "$dest/"
for manifest in "$src"/crates/*/Cargo.toml; do
  crate=$(dirname "$manifest")
  name=$(basename "$crate")
  out="$dest/crates/$name"
  mkdir -p "$out/src"
  cp "$manifest" "$out/Cargo.toml"
  [ -f "$crate/build.rs" ] && cp "$crate/build.rs" "$out/build.rs"
  [ -f "$crate/src/lib.rs" ] && : > "$out/src/lib.rs"
  [ -f "$crate/src/main.rs" ] && echo 'fn main() {}' > "$out/src/main.rs"
  # Explicit target paths ([[bin]] path = "src/bin/x.rs"): each needs a file.
  sed -n 's/^[[:space:]]*path[[:space:]]*=[[:space:]]*"\([^"]*\.rs\)".*/\1/p' "$manifest" |
    while read -r path; do
      mkdir -p "$out/$(dirname "$path")"
      [ -f "$out/$path" ] || echo 'fn main() {}' > "$out/$path"
    done
done
