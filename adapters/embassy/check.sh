#!/usr/bin/env bash
# Prints the .text size in bytes of the embassy firmware example (examples/embassy-firmware:
# coap-engine-embassy with embassy-executor and embassy-net on a Cortex-M4F);
# `--sections` also lists every section on stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec bash "$here/../../.ci/firmware-size" "$here/../../examples/embassy-firmware" coap-engine-embassy-firmware "$@"
