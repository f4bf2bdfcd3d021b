#!/usr/bin/env bash
# Builds core/nostd-check for thumbv7em-none-eabihf (opt-level "z", LTO, one codegen unit,
# panic = "abort") and prints the size of its .text section in bytes, alone on one line of
# stdout, so CI and the README can use the figure. With `--sections` it also prints the size of
# every allocated section to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target=thumbv7em-none-eabihf
elf="$here/target/$target/release/coap-engine-nostd-check"

if command -v rustup >/dev/null 2>&1; then
    rustup target add "$target" >/dev/null 2>&1 || true
fi
cargo build --quiet --locked --manifest-path "$here/Cargo.toml" --target "$target" --release

# `readelf -S -W` (binutils; reads ARM ELF on any host) prints, per section:
#   [Nr] Name Type Addr Off Size ...   with the size in hex, four fields after the name.
sections() {
    readelf -S -W "$elf" | awk '{ for (i = 1; i < NF; i++) if ($i ~ /^\./ && $(i + 1) ~ /^(PROGBITS|NOBITS)$/ && $(i + 1 + 3) != "") { print $i, $(i + 4); break } }'
}
text_hex="$(sections | awk '$1 == ".text" { print $2 }')"
if [ -z "$text_hex" ]; then
    echo "size.sh: no .text section in $elf" >&2
    exit 1
fi
if [ "${1:-}" = "--sections" ]; then
    sections | while read -r name hex; do
        printf '%-16s %8d bytes\n' "$name" "$((16#$hex))" >&2
    done
fi
echo "$((16#$text_hex))"
