#!/usr/bin/env bash
# A GPU session's one command, from the repository root: every GPU check (src/grokbench/bench/gpu_check.py)
# in at most 8 minutes, into one report, $OUT/gpu-check.md where $OUT is set (the GPU machine copies $OUT
# back), else results/gpu-check.md. Installs nothing; uses $PYTHON, else .venv/bin/python, else python3,
# with this checkout's src/ first on the path and a fresh torch.compile cache. Extra arguments go to
# `python -m grokbench gpu-check` (--only, --limit STEP=SECONDS, --step-args, --quick, --work).
TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-$(mktemp -d)}" PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}" -m grokbench gpu-check --out "${OUT:-results}/gpu-check.md" "$@"
