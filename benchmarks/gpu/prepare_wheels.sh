#!/usr/bin/env bash
# Fill .whl/ (ignored by git) with the wheels the GPU machine lacks, for Python 3.12 on x86-64
# Linux, at the versions installed in this checkout's .venv (the ones the tests ran with).
#
#   bash benchmarks/gpu/prepare_wheels.sh [DIR]      # DIR defaults to .whl; carry it to the GPU machine
#
# The GPU machine has torch (CUDA), transformers, accelerate, numpy, scipy, matplotlib, psutil,
# PyYAML, tqdm, packaging, Pillow, tabulate, portalocker, msgpack, ninja, py-cpuinfo, einops and
# nvidia-ml-py; it has no network. DeepSpeed, fvcore and iopath are published as source only, so
# their (pure-Python) wheels are built here; DeepSpeed's build imports torch, so it is built
# without isolation against this venv's CPU torch (its ops are compiled later, on the GPU
# machine, by the kit's first phase). xgboost-cpu gives the xgboost module without the 469 MB
# NCCL wheel that xgboost pulls on Linux.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-.whl}
mkdir -p "$OUT"

version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }

binary=(optuna alembic Mako SQLAlchemy colorlog pydantic pydantic_core annotated-types
        typing-inspection typing_extensions hjson yacs termcolor)
pins=()
for name in "${binary[@]}"; do pins+=("$name==$(version "$name")"); done
xgb=$(version xgboost-cpu 2>/dev/null || version xgboost)
pins+=("xgboost-cpu==$xgb")

"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$OUT" "${pins[@]}"

for name in deepspeed fvcore iopath; do
    "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$OUT" "$name==$(version "$name")"
done

# One version of each: an older download left in the folder would stop the install there.
"$PY" - "$OUT" <<'PYEOF'
import collections, pathlib, sys
folder = pathlib.Path(sys.argv[1])
seen = collections.defaultdict(list)
for wheel in folder.glob("*.whl"):
    seen[wheel.name.split("-")[0].lower().replace("_", "-")].append(wheel.name)
doubles = {k: v for k, v in seen.items() if len(v) > 1}
if doubles:
    sys.exit(f"more than one version in {folder}: {doubles}")
PYEOF
du -sh "$OUT"
ls "$OUT"
