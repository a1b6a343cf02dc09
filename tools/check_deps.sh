#!/usr/bin/env bash
# tools/check_deps.sh — fails on a reversed include edge.
#   engine <- layers <- detectors <- distill ; data <- engine ; detectors may use data.
# Each directory lists the top-level directories it must NOT include.
set -u
declare -A forbidden=(
  [engine]="layers detectors distill data tools tests bench"
  [layers]="detectors distill data tools tests bench"
  [data]="layers detectors distill tools tests bench"
  [detectors]="distill tools tests bench"
  [distill]="tools tests bench"
)
bad=0
for dir in "${!forbidden[@]}"; do
  [ -d "$dir" ] || continue
  for f in $(find "$dir" -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh'); do
    for target in ${forbidden[$dir]}; do
      if grep -nE "^\s*#\s*include\s+\"$target/" "$f" >/dev/null; then
        grep -nE "^\s*#\s*include\s+\"$target/" "$f" | sed "s|^|check-deps: $f:|;s|\$|   <- $dir/ must not include $target/|" >&2
        bad=1
      fi
    done
  done
done
[ $bad = 0 ] && echo "check-deps: include edges OK (engine <- layers <- detectors <- distill; data <- engine)"
exit $bad
