#!/usr/bin/env bash
# The GPU check of the CUDA kernels: one prepared script for a short GPU session (about five
# minutes), in four phases, each reported on its own:
#   1. tests    the GPU suite (tests/test_ops_cuda_gpu.py, and test_ops_cuda_gpu_edges.py:
#               training step, Parameter theta, offset views in f32/f16/bf16 with the kernel
#               width that ran, T*N > 2^31, CUDA-graph capture and replay, subnormal theta and x,
#               cuda:1 where there are two GPUs) and the build tests (nvcc, NVRTC with CuPy's
#               options, the host build);
#   2. memcheck compute-sanitizer --tool memcheck on a small run of every kernel (each dtype and
#               vector width, forward, byte spikes, count) and the backward; skipped where
#               compute-sanitizer or a GPU is missing;
#   3. verify   benchmarks/verify_all.py: the first-use check (sj_qvm.ops.verify) of every
#               combination of the CUDA kernels (dtype, current, firing rule, scalar or
#               per-channel theta and V0, forward and backward, the rate kernel) and of the CPU
#               build, against the torch reference, with the time each check takes;
#   4. bench    benchmarks/bench_cuda.py (one JSON line per row; a row that fails says why).
# Run it in the repo root on a CUDA machine with torch, cupy (the `cuda12`/`cuda13` extra),
# pytest and nvcc:
#        bash benchmarks/gpu_check.sh                 # results in $OUT (default: a new temp folder)
# It writes $OUT/gpu_check-<device name>.txt (environment with cupy.show_config(), each phase's
# output and a summary), $OUT/verify.json, $OUT/bench.jsonl and $OUT/results.json (the device
# name, each phase's exit status, the checks' summary and the benchmark rows: the figures for
# benchmarks/RESULTS.md). Without a GPU the GPU phases skip cleanly (a dry run).
# Caps (seconds): GPU_CHECK_TESTS_S=180, GPU_CHECK_MEMCHECK_S=90, GPU_CHECK_VERIFY_S=120,
# GPU_CHECK_BENCH_S=90; the
# benchmark's arguments: GPU_CHECK_BENCH_ARGS (default "--n 1M 16M 128M --repeats 5").
# It needs spikingjelly (sj_qvm's host, and the benchmark's reference). Where it is not installed
# and the GPU machine is offline, first run on a networked machine, in the repo root,
#        bash benchmarks/gpu_check.sh fetch
# which downloads spikingjelly 2.0.0 and its two pure-Python requirements that a plain CUDA image
# tends to lack (loguru, scienceplots) into .whl/ (git-ignored, about 1.2 MB); copy .whl/ along
# with the tree, and the check installs them into $GPU_CHECK_SITE (default /tmp/site).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

if [[ "${1:-}" == "fetch" ]]; then
  mkdir -p .whl
  exec python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    spikingjelly==2.0.0 loguru==0.7.3 scienceplots==2.2.2
fi

OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
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

device=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
slug=$(printf '%s' "${device:-no GPU}" | tr -c 'A-Za-z0-9.-' '_')
RESULTS="$OUT/gpu_check-$slug.txt"
exec > >(tee "$RESULTS") 2>&1

echo "=== environment ($(date -u +%FT%TZ), device: ${device:-none})"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv \
  2>/dev/null || echo "nvidia-smi: not found or no GPU"
python3 - <<'EOF'
import importlib.metadata as m
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "GPUs", torch.cuda.device_count(),
      "spikingjelly", m.version("spikingjelly"))
EOF
nvcc --version 2>/dev/null | tail -1 || echo "nvcc: not found"
python3 -c "import cupy; cupy.show_config()" || echo "cupy.show_config() failed (above)"
has_gpu=$(python3 -c "import torch; print(int(torch.cuda.is_available()))")

echo "=== phase 1: tests"
timeout -k 10 "${GPU_CHECK_TESTS_S:-180}" python3 -m pytest -q -rA -p no:cacheprovider \
  tests/test_ops_cuda_gpu.py tests/test_ops_cuda_gpu_edges.py tests/test_ops_cuda_build.py
tests_rc=$?

echo "=== phase 2: compute-sanitizer memcheck"
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
if [[ "$has_gpu" != 1 || -z "$sanitizer" ]]; then
  echo "skipped: ${sanitizer:+no GPU}${sanitizer:-compute-sanitizer not found}"
  memcheck_rc=skipped
else
  cat >"$OUT/memcheck_small.py" <<'EOF'
"""Every kernel once on a small input (rows of 64 neurons: vector widths; 63: scalar)."""
import torch

from sj_qvm._compat import surrogate
from sj_qvm.ops.if_rate import if_rate_cupy
from sj_qvm.ops.if_loop.cupy import if_multi_step_cupy
from sj_qvm.ops.if_loop.cupy import LAUNCHES

dev = torch.device("cuda")
theta = torch.tensor([0.4, 0.9, 1.3], device=dev).view(3, 1).requires_grad_()
for dtype in (torch.float32, torch.float16, torch.bfloat16):
    for n in (64, 63):
        x = ((torch.rand(3, 2, 3, n, device=dev) * 1.4 - 0.2).to(dtype)).requires_grad_()
        spike, v, v_seq = if_multi_step_cupy(x, 0.5 * theta, theta, False, "expected",
                                             surrogate.Sigmoid(), store_v_seq=True)
        torch.autograd.grad((spike.float() * 0.5).sum() + v.sum() + v_seq.sum(), (x, theta))
        with torch.no_grad():
            if_multi_step_cupy(x, 0.0, theta, True, "instant", spike_dtype=torch.uint8)
            if_rate_cupy(x[0], 4, 0.5 * theta, theta)
torch.cuda.synchronize()
want = {f"qvm_if_forward_{d}_{s}_v{v}" for d, w in (("f32", 4), ("f16", 8), ("bf16", 8))
        for s in ("same", "u8") for v in (1, w)}
want |= {f"qvm_if_backward_{d}_v{v}" for d in ("f32", "f16", "bf16") for v in (1, 4)}
want |= {f"qvm_if_count_{d}_v{v}" for d, w in (("f32", 4), ("f16", 8), ("bf16", 8)) for v in (1, w)}
print("kernels run under memcheck:", ", ".join(f"{k} x{n}" for k, n in sorted(LAUNCHES.items())))
missing = sorted(want - set(LAUNCHES))
print("missing:", missing or "none")
raise SystemExit(1 if missing else 0)
EOF
  timeout -k 10 "${GPU_CHECK_MEMCHECK_S:-90}" "$sanitizer" --tool memcheck --error-exitcode 9 \
    --print-limit 20 python3 "$OUT/memcheck_small.py"
  memcheck_rc=$?
fi

echo "=== phase 3: first-use checks of every combination"
timeout -k 10 "${GPU_CHECK_VERIFY_S:-120}" python3 benchmarks/verify_all.py --repeats 3 \
  --json "$OUT/verify.json"
verify_rc=$?

echo "=== phase 4: benchmark"
# The arguments are meant to split:
# shellcheck disable=SC2086
timeout -k 10 "${GPU_CHECK_BENCH_S:-90}" python3 benchmarks/bench_cuda.py \
  ${GPU_CHECK_BENCH_ARGS:---n 1M 16M 128M --repeats 5} >"$OUT/bench.jsonl"
bench_rc=$?
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
    for what, err in r.get("errors", {}).items():
        print(f"    {what}: {err}")
EOF
cat "$OUT/bench.jsonl"

echo "=== summary (device: ${device:-none}; 124 = the phase ran past its cap)"
echo "phase 1 tests:    rc=$tests_rc"
echo "phase 2 memcheck: rc=$memcheck_rc"
echo "phase 3 verify:   rc=$verify_rc"
echo "phase 4 bench:    rc=$bench_rc"
python3 - "$OUT" "${device:-none}" "$tests_rc" "$memcheck_rc" "$verify_rc" "$bench_rc" <<'EOF'
import json, os, sys
out, device, *rcs = sys.argv[1:]
path = lambda name: os.path.join(out, name)
rows = ([json.loads(line) for line in open(path("bench.jsonl")) if line.startswith("{")]
        if os.path.exists(path("bench.jsonl")) else [])
verify = json.load(open(path("verify.json"))) if os.path.exists(path("verify.json")) else None
results = {"device": device, "phases": dict(zip(("tests", "memcheck", "verify", "bench"), rcs)),
           "verify": verify["summary"] if verify else None, "bench": rows}
with open(path("results.json"), "w") as f:
    json.dump(results, f, indent=1)
print("results.json:", path("results.json"))
EOF
echo "results: $RESULTS"
[[ $tests_rc == 0 && ($memcheck_rc == 0 || $memcheck_rc == skipped) && $verify_rc == 0
   && $bench_rc == 0 ]]
