#!/usr/bin/env bash
# The GPU figures of the `hf` engine on a bare GPU machine: only Python, PyTorch and transformers installed, no
# package index (issue 26). From the repository's root, after `make gpu-wheels` here put the few pure-Python
# wheels that machine lacks into .whl/:
#
#     bench/gpu_check.sh [--smoke] [bench_gpu.py options...]
#
# It installs those wheels and ipt_data itself (`--no-deps`, nothing fetched) into a folder of its own, prints
# the versions it runs with, then runs `bench/bench_gpu.py --engine hf` (static vs continuous batching at the
# synthesizer's real shape) and writes its JSON into $OUT (the device tool's folder) or bench/results/.
# Sized for the lent machine's minutes: 300 documents, one repeat (override with --docs, --repeats): 314 prompts,
# 283K raw tokens, 126K generated tokens in each of five passes (the warm-up that records the prompts, then the
# four sides).
# `--smoke` runs the small CPU shape instead: a check of this script anywhere, in a minute or two.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
SITE=${GPU_CHECK_SITE:-$(mktemp -d)/site}
RESULTS=${OUT:-bench/results}

if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "gpu_check: no wheels in $WHEELS/ (run 'make gpu-wheels' where pip can reach an index)" >&2
    exit 2
fi
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl
# ipt_data itself, built offline by the setuptools there; without a usable one, its package folder copied
if ! "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --upgrade \
    --target "$SITE" . 2>"$SITE.pip.log"; then
    echo "gpu_check: ipt_data could not be built here ($(tail -1 "$SITE.pip.log")): its package folder copied"
    cp -r ipt_data "$SITE/"
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

"$PY" - <<'EOF'
import importlib.metadata as m
import platform

names = ["ipt-data", "torch", "transformers", "datasets", "pyarrow", "numpy", "tokenizers", "huggingface-hub"]
found = []
for name in names:
    try:
        found.append(f"{name} {m.version(name)}")
    except m.PackageNotFoundError:
        found.append(f"{name} MISSING")
print(f"gpu_check: Python {platform.python_version()}; " + ", ".join(found))
import ipt_data.run  # noqa: E402,F401 - everything augment imports is there
EOF

smoke=()
if [[ "${1:-}" == "--smoke" ]]; then
    smoke=(--smoke)
    shift
fi
mkdir -p "$RESULTS"
tag=$([[ ${#smoke[@]} -gt 0 ]] && echo smoke || echo gpu)
# the device tool's commands end at 10 minutes: stop here first, so what was printed (each side's seconds, as it
# finishes) comes back (GPU_CHECK_TIMEOUT seconds, 0 for none)
limit=${GPU_CHECK_TIMEOUT:-480}
guard=()
[[ "$limit" != 0 ]] && guard=(timeout "$limit")
"${guard[@]}" "$PY" bench/bench_gpu.py --engine hf --docs 300 --repeats 1 "${smoke[@]}" \
    --out "$RESULTS/gpu-hf-$tag.json" "$@"
