#!/usr/bin/env bash
# Prints this firmware's .text bytes per coap-engine module and per crate (see
# `.ci/firmware-breakdown` for how symbols are attributed), then one line per feature set of
# the engine: RFC 7252's client and server alone, with observe and/or block-wise, everything
# (the default: also CoAP over TCP), everything with the no_std security seam, and everything
# with a logger installed, its debug lines compiled in and then out (`log`'s max_level_off).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
breakdown="$here/../../.ci/firmware-breakdown"
bash "$breakdown" "$here" coap-engine-nostd-check
echo
echo "per feature set of coap-engine (coap_engine: the sum of its modules' groups)"
for set in "rfc7252|--no-default-features" \
    "+observe|--no-default-features --features observe" \
    "+blockwise|--no-default-features --features blockwise" \
    "+observe,blockwise|--no-default-features --features observe,blockwise" \
    "default (+tcp)|" \
    "default+security|--features security" \
    "default+logger|--features logger" \
    "default+logger,log-off|--features log-off"; do
    name="${set%%|*}"
    # shellcheck disable=SC2086 # the cargo flags are words
    bash "$breakdown" "$here" coap-engine-nostd-check ${set#*|} |
        awk -v set="$name" '/ coap_engine(::| )/ { engine += $1 } / core::fmt / { fmt = $1 }
            /\.text section/ { text = $1 }
            END { printf "  %-22s .text %6d  coap_engine %6d  core::fmt %5d\n", set, text, engine, fmt }'
done
