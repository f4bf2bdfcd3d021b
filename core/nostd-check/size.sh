#!/usr/bin/env bash
# Prints the .text size in bytes of this no_main firmware (a client and a server endpoint
# back to back on thumbv7em-none-eabihf); `--sections` also lists every section on stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec bash "$here/../../.ci/firmware-size" "$here" coap-engine-nostd-check "$@"
