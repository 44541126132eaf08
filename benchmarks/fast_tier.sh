#!/usr/bin/env bash
# The fast tier (`pytest`) of this checkout side by side with an earlier commit's, alternating,
# in this checkout's venv (the earlier package is put first on PYTHONPATH):
#   bash benchmarks/fast_tier.sh 3481c3e [rounds]
# Prints each run's pytest summary line; run it on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)
old=${1:?usage: bash benchmarks/fast_tier.sh COMMIT [ROUNDS]}
rounds=${2:-2}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git worktree add --detach -q "$tmp/old" "$old"
trap 'git -C "$here" worktree remove --force "$tmp/old"; rm -rf "$tmp"' EXIT
for i in $(seq "$rounds"); do
    (cd "$tmp/old" && PYTHONPATH="$tmp/old/src" "$here/.venv/bin/pytest" -q -p no:cacheprovider 2>&1 \
        | tail -1 | sed "s/^/$old, round $i: /")
    ("$here/.venv/bin/pytest" -q -p no:cacheprovider 2>&1 | tail -1 | sed "s/^/this checkout, round $i: /")
done
