#!/usr/bin/env bash
# Issue 12's GPU figures on the GPU host, in one run (see benchmarks/gpu_check.py and
# ../shared/gpu/README.md). After `bash ../shared/gpu/prepare.sh` and the runs carrying
# .gpu/c1..c3, from the project's root:
#   cp benchmarks/gpu_check.sh .gpu/c4/      # then, carrying .gpu/c4 (and .whl, see below):
#   bash .gpu/c4/run.sh gpu_check.sh [gpu_check.py options]
# Anywhere else: bash benchmarks/gpu_check.sh [options], e.g. --device cpu --quick.
# gpu_check.py writes gpu_<tag>.json and .md into $OUT (else benchmarks/results) after every
# part, and its log goes beside them, so a run stopped early still returns what it finished.
set -u
export PYTHONUNBUFFERED=1
out=${OUT:-benchmarks/results}
mkdir -p "$out"
# PyAV is not in the GPU host's image; without it only the pipeline part (item 1) fails. Its
# wheel (av-*-cp312-abi3-manylinux_2_28_x86_64.whl, 35 MB) can travel in .whl/ or .gpu/c4/: it is
# installed into /tmp/site, which run.sh puts on the path.
if ! python3 -c "import av" 2>/dev/null; then
  wheels=$(compgen -G ".whl/av-*.whl"; compgen -G ".gpu/c4/av-*.whl")
  if [[ -n $wheels ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site $wheels
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  python3 -c "import av" 2>/dev/null \
    || echo "warning: no PyAV (import av): the pipeline part (item 1) will fail"
fi
script=benchmarks/gpu_check.py
[[ -f $script ]] || script=/tmp/proj/benchmarks/gpu_check.py
# SIGINT at the limit: the parts finished are already saved; the one running is lost.
timeout --signal=INT "${GPU_CHECK_TIMEOUT:-540}" python3 "$script" --out "$out" "$@" 2>&1 \
  | tee "$out/gpu_check.log"
status=${PIPESTATUS[0]}
ls -l "$out"
exit "$status"
