#!/usr/bin/env bash
# Builds the `ram` binary (src/bin/ram.rs) for thumbv7em-none-eabihf and runs it under QEMU
# (`netduinoplus2`, an STM32F405 Cortex-M4F): it prints the engine's heap bytes per endpoint,
# per session and per exchange, and the stack depth of a request round trip, measured on the
# emulated target over semihosting. Exits non-zero if a measurement fails.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target=thumbv7em-none-eabihf
command -v qemu-system-arm >/dev/null 2>&1 ||
    { echo "ram.sh: qemu-system-arm not found (Debian/Ubuntu: apt-get install qemu-system-arm)" >&2; exit 1; }
if command -v rustup >/dev/null 2>&1; then
    rustup target add "$target" >/dev/null 2>&1 || true
fi
cargo build --quiet --locked --manifest-path "$here/Cargo.toml" --target "$target" --release --features ram --bin ram \
    --target-dir "$here/target"
# Semihosting output goes to QEMU's stderr; a hang (a fault loop) ends at the timeout.
timeout 120 qemu-system-arm -machine netduinoplus2 -nographic -monitor none -serial none \
    -semihosting-config enable=on,target=native -kernel "$here/target/$target/release/ram" 2>&1
