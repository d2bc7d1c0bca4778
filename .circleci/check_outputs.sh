#!/usr/bin/env bash
# Compare the files under OUT_DIR with an expected list (one relative path per line; '#' comments).
#   bash .circleci/check_outputs.sh OUT_DIR EXPECTED_LIST
set -euo pipefail
out=$1; expected=$2
diff -u <(grep -v -e '^#' -e '^$' "$expected" | sort) <(cd "$out" && find . -type f | sed 's|^\./||' | sort) &&
    echo "output tree of $out matches $expected ($(grep -c -v -e '^#' -e '^$' "$expected") files)"
