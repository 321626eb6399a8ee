#!/usr/bin/env bash
# GPU check of the CuPy kernels: the GPU tests, then bench_cuda.py's figures, in one run.
#
# Run it in the repo root on a CUDA machine that has torch, cupy (the `cuda12`/`cuda13` extra),
# pytest and nvcc:
#        bash benchmarks/gpu_check.sh                 # results in $OUT (default: a new temp folder)
# It needs spikingjelly 2.0.0 (the benchmark's reference). Where it is not installed and the GPU
# machine is offline, first run on a networked machine, in the repo root,
#        bash benchmarks/gpu_check.sh fetch
# which downloads spikingjelly 2.0.0 and its two pure-Python requirements that a plain CUDA image
# tends to lack (loguru, scienceplots) into .whl/ (git-ignored, about 1.2 MB); copy .whl/ along
# with the tree, and the check installs them into $GPU_CHECK_SITE (default /tmp/site).
# The phases are capped at 240 s (tests) + 150 s (benchmark); GPU_CHECK_BENCH_N="1M 16M"
# shortens the benchmark.
# Writes $OUT/env.txt, $OUT/gpu_tests.log, $OUT/bench.jsonl and $OUT/bench.log; prints a summary.
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "fetch" ]]; then
  mkdir -p .whl
  exec python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    spikingjelly==2.0.0 loguru==0.7.3 scienceplots==2.2.2
fi

OUT="${OUT:-$(mktemp -d)}"
SITE="${GPU_CHECK_SITE:-/tmp/site}"
export PYTHONUNBUFFERED=1
if ! python3 -c "import spikingjelly" 2>/dev/null; then
  ls .whl/spikingjelly-*.whl >/dev/null 2>&1 || {
    echo "spikingjelly is not installed and there is no .whl/: pip install spikingjelly==2.0.0," \
         "or run 'bash benchmarks/gpu_check.sh fetch' on a networked machine and copy .whl/ here"; exit 2; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl || exit 3
fi
export PYTHONPATH="$PWD:$SITE"

{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
  python3 -c "import torch, cupy, spikingjelly, importlib.metadata as m; print('torch', torch.__version__, 'cupy', cupy.__version__, 'spikingjelly', m.version('spikingjelly'))"
  nvcc --version | tail -1
  python3 -c "import cupy; cupy.show_config()"
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

echo "=== tests (GPU, and the CPU kernel tests on this machine's nvcc/NVRTC)"
timeout 240 python3 -m pytest -q -rs -p no:cacheprovider tests/test_ops_cuda_gpu.py \
  tests/test_ops_cuda_build.py 2>&1 | tee "$OUT/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}

echo "=== benchmark"
# shellcheck disable=SC2086
timeout 150 python3 benchmarks/bench_cuda.py --n ${GPU_CHECK_BENCH_N:-1M 4M 16M 64M 256M} \
  >"$OUT/bench.jsonl" 2>"$OUT/bench.log"
bench_rc=$?
tail -5 "$OUT/bench.log"
python3 - "$OUT/bench.jsonl" <<'EOF'
import json, sys
fmt = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"
print(f"{'case':<17}{'dtype':<9}{'T':>2}{'N':>11}{'ms':>9}{'GB/s':>8}{'/copy':>7}{'/torch':>8}{'/SJ':>7}")
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    print(f"{r['case']:<17}{r['dtype']:<9}{r['T']:>2}{r['N']:>11}{fmt(r.get('ms'), 3):>9}"
          f"{fmt(r.get('gbps'), 0):>8}{fmt(r.get('ratio_copy')):>7}{fmt(r.get('ratio_torch')):>8}"
          f"{fmt(r.get('ratio_sj')):>7}")
EOF
echo "tests rc=$tests_rc bench rc=$bench_rc"
exit $(( tests_rc != 0 || bench_rc != 0 ))
