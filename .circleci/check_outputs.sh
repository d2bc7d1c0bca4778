#!/usr/bin/env bash
# Compare the files under OUT_DIR with an expected list (one relative path per line; '#' comments).
#   bash .circleci/check_outputs.sh OUT_DIR EXPECTED_LIST
set -euo pipefail
out=$1; expected=$2
# Each run's settings file is named after its start time: compared as one name (several runs, one line).
diff -u <(grep -v -e '^#' -e '^$' "$expected" | sort) \
    <(cd "$out" && find . -type f | sed -E -e 's|^\./||' \
        -e 's#^logs/config-[0-9]{8}-[0-9]{6}(-[0-9]+)?\.toml$#logs/config-<date>-<time>.toml#' | sort -u) &&
    echo "output tree of $out matches $expected ($(grep -c -v -e '^#' -e '^$' "$expected") files)"
