#!/usr/bin/env bash
# Prints this firmware's .text bytes per coap-engine module and per crate (see
# `.ci/firmware-breakdown` for how symbols are attributed), then one line per feature set of
# the engine it can take: none, and `security` (the no_std security seam).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
breakdown="$here/../../.ci/firmware-breakdown"
bash "$breakdown" "$here" coap-engine-nostd-check
echo
echo "per feature set of coap-engine (coap_engine: the sum of its modules' groups)"
for features in "" security; do
    bash "$breakdown" "$here" coap-engine-nostd-check ${features:+--features "$features"} |
        awk -v set="${features:-none}" '/ coap_engine(::| )/ { engine += $1 } /\.text section/ { text = $1 }
            END { printf "  %-10s .text %6d  coap_engine %6d\n", set, text, engine }'
done
