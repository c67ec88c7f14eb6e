#!/usr/bin/env bash
# Dev set-up for a fresh machine of the project's kind (CPU only, no GPU).
#  * torch, torchvision and torchaudio are pinned by requirements/constraints.txt to a trio
#    that imports together: torch 2.14.1 + torchvision 0.29.1 (both on this kind's disk, a
#    CUDA build that runs on the CPU) and torchaudio 2.11.1 (stable ABI: it loads beside any
#    torch >= 2.11). The alternatives, measured on 2026-12-06:
#      - the local CPU wheel torch 2.13.0 (the previous set-up): 57 s, 1.8 GB, but PyPI's
#        torchvision does not import beside it ("operator torchvision::nms does not
#        exist", even with its extension removed) and PyPI's torchaudio needs
#        libc10_cuda; only torchaudio's pure-Python modules would work, with its
#        compiled libraries deleted by hand;
#      - torch 2.9.1 + torchvision 0.24.1 + torchaudio 2.9: about 7 GB downloaded.
#    This set-up: 89 s and 6.3 GB on this kind (57 s and 1.8 GB before; both with pip's
#    download cache warm), nothing downloaded but PyPI's small packages.
#  * espeak-ng (Debian) synthesises the speech of the offline miniature corpus.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -c requirements/constraints.txt torch torchvision torchaudio
"$VENV/bin/python" -m pip install --quiet -c requirements/constraints.txt -e '.[dev,docs,hf,audio,vision,lora,stats]'

if ! command -v espeak-ng >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
  echo "installing espeak-ng (speech for the offline miniature corpus)"
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq espeak-ng >/dev/null \
    || echo "warning: could not install espeak-ng; speech tests and the speech tasks of the demo will be skipped" >&2
fi
