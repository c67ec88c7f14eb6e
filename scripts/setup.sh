#!/usr/bin/env bash
# Dev set-up for a fresh machine of the project's kind (CPU only, no GPU).
#  * torch is pinned by requirements/constraints.txt to the local CPU build 2.13.0;
#    any other version would pull gigabytes of CUDA wheels.
#  * torchvision and torchaudio are never installed: their PyPI wheels are CUDA-linked,
#    do not import on a CPU torch, and a broken torchvision breaks `import lightning`.
#    omni_blocks reads and writes audio with soundfile and computes spectrograms in torch.
#  * espeak-ng (Debian) synthesises the speech of the offline miniature corpus.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -c requirements/constraints.txt torch==2.13.0
"$VENV/bin/python" -m pip install --quiet -c requirements/constraints.txt -e '.[dev,docs,hf]'

if ! command -v espeak-ng >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
  echo "installing espeak-ng (speech for the offline miniature corpus)"
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq espeak-ng >/dev/null \
    || echo "warning: could not install espeak-ng; speech tests and the speech tasks of the demo will be skipped" >&2
fi
