#!/usr/bin/env bash
# Builds the embassy firmware example (examples/embassy-firmware: coap-engine-embassy with
# embassy-executor and embassy-net on a Cortex-M4F) for thumbv7em-none-eabihf with opt-level
# "z", LTO and panic = "abort", and prints the size of its .text section in bytes, alone on one
# line of stdout. With `--sections` it also prints every allocated section's size to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
crate="$here/../../examples/embassy-firmware"
target=thumbv7em-none-eabihf
elf="$crate/target/$target/release/coap-engine-embassy-firmware"

if command -v rustup >/dev/null 2>&1; then
    rustup target add "$target" >/dev/null 2>&1 || true
fi
cargo build --quiet --locked --manifest-path "$crate/Cargo.toml" --target "$target" --release

# `readelf -S -W` prints, per section: [Nr] Name Type Addr Off Size ... (size in hex).
sections() {
    readelf -S -W "$elf" | awk '{ for (i = 1; i < NF; i++) if ($i ~ /^\./ && $(i + 1) ~ /^(PROGBITS|NOBITS)$/ && $(i + 1 + 3) != "") { print $i, $(i + 4); break } }'
}
text_hex="$(sections | awk '$1 == ".text" { print $2 }')"
if [ -z "$text_hex" ]; then
    echo "check.sh: no .text section in $elf" >&2
    exit 1
fi
if [ "${1:-}" = "--sections" ]; then
    sections | while read -r name hex; do
        printf '%-16s %8d bytes\n' "$name" "$((16#$hex))" >&2
    done
fi
echo "$((16#$text_hex))"
