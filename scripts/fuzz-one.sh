#!/usr/bin/env bash
# Fuzz one target for a while: scripts/fuzz-one.sh GO DIR TARGET FUZZTIME.
#
# Go 1.26's fuzz coordinator can fail a duration-bounded run with a bare
# "context deadline exceeded" at the end of -fuzztime, when a worker is still
# mid-input as the deadline fires (go.dev/issue/75804, fixed in Go 1.27); on a
# loaded 2-core machine it happens often enough to turn CI red. That failure
# writes no failing input. So: a failure that wrote a new input under
# testdata/fuzz/TARGET, or failed any other way, fails at once; the coordinator's
# bare deadline is retried, twice at most.
set -uo pipefail
go_cmd=$1 dir=$2 target=$3 fuzztime=$4
corpus="$dir/testdata/fuzz/$target"
count_inputs() { find "$corpus" -type f 2>/dev/null | wc -l; }

for attempt in 1 2 3; do
    before=$(count_inputs)
    log=$(mktemp)
    "$go_cmd" test -run '^$' -fuzz "^$target\$" -fuzztime "$fuzztime" "$dir" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    after=$(count_inputs)
    flake=0
    if [ "$rc" -ne 0 ] && [ "$after" -eq "$before" ] &&
        grep -q '^    context deadline exceeded$' "$log" && ! grep -q 'Failing input written' "$log"; then
        flake=1
    fi
    rm -f "$log"
    if [ "$rc" -eq 0 ]; then
        exit 0
    fi
    if [ "$flake" -eq 0 ]; then
        exit "$rc"
    fi
    echo "fuzz $dir $target: Go's coordinator stopped on its own deadline with no failing input (go.dev/issue/75804); running it again" >&2
done
echo "fuzz $dir $target: the coordinator's deadline failure came back three times" >&2
exit 1
