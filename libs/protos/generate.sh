#!/usr/bin/env bash
# Regenerates the Python stubs of protos/ into libs/protos/src (run by `make protos`).
# Output is deterministic, so CI regenerates and fails on any diff.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/libs/protos/src"
cd "$root/protos"
rm -rf "$out/aether"
mkdir -p "$out"
mapfile -t files < <(find aether -name '*.proto' | LC_ALL=C sort)
python -m grpc_tools.protoc -I . \
  --python_out="$out" --mypy_out="$out" \
  --grpc_python_out="$out" --mypy_grpc_out="$out" \
  "${files[@]}"
# Regular packages (not namespace ones) so mypy and importers resolve them plainly.
find "$out/aether" -type d -exec touch {}/__init__.py \;
touch "$out/aether/py.typed"
