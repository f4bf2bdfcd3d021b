#!/usr/bin/env bash
# Prints the embassy firmware example's .text bytes per crate and per coap-engine module (see
# `.ci/firmware-breakdown` for how symbols are attributed), then one line per feature set of
# the example: UDP without observe (its default), with the adapter's `observe`, and over TCP.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
breakdown="$here/../../.ci/firmware-breakdown"
example="$here/../../examples/embassy-firmware"
bash "$breakdown" "$example" coap-engine-embassy-firmware
echo
echo "per feature set of the example (coap_engine: the sum of its modules' groups)"
for features in "" observe tcp; do
    bash "$breakdown" "$example" coap-engine-embassy-firmware ${features:+--features "$features"} |
        awk -v set="${features:-none}" '/ coap_engine(::| )/ { engine += $1 } / coap_engine_embassy / { adapter = $1 } /\.text section/ { text = $1 }
            END { printf "  %-10s .text %6d  coap_engine %6d  coap_engine_embassy %6d\n", set, text, engine, adapter }'
done
