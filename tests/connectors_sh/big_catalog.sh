#!/bin/sh
# Prints a catalog on one line of several MB (it spans many stdout reads).
[ "$1" = spec ] && { printf '{"type":"SPEC","spec":{"connectionSpecification":{"type":"object"}}}\n'; exit 0; }
filler=x
for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22; do
    filler=$filler$filler
done
printf '{"type":"CATALOG","catalog":{"streams":[{"name":"wide","json_schema":{"type":"object","description":"%s"},"supported_sync_modes":["full_refresh"]}]}}\n' "$filler"
