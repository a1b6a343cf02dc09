#!/usr/bin/env bash
# tools/install_deps.sh — installs what kdet needs from Debian (as root), or says what is missing.
#   install_deps.sh build PKG...     C++ build dependencies (headers)
#   install_deps.sh python PYTHON    python3-torch/torchvision (+ pycocotools, safetensors from PyPI) for
#                                    the parity generators; never fatal: parity is skipped loudly instead
set -u
mode=$1; shift
if [ "$mode" = build ]; then
  missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && exit 0
  if [ "$(id -u)" = 0 ]; then
    echo "kdet: installing missing Debian packages: ${missing[*]}"
    (apt-get install -y --no-install-recommends "${missing[@]}" || { apt-get update -q && apt-get install -y --no-install-recommends "${missing[@]}"; }) >/dev/null \
      || { echo "kdet: apt-get install ${missing[*]} failed" >&2; exit 1; }
  else
    echo "kdet: missing Debian packages: ${missing[*]}" >&2
    echo "      run: sudo apt-get install ${missing[*]}   (or: sudo make deps)" >&2
    exit 1
  fi
elif [ "$mode" = python ]; then
  py=$1
  if ! "$py" -c "import torch, torchvision" 2>/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      echo "kdet: installing python3-torch python3-torchvision (Debian) for the parity generators"
      (apt-get install -y --no-install-recommends python3-torch python3-torchvision python3-numpy libopenblas0-pthread || \
       { apt-get update -q && apt-get install -y --no-install-recommends python3-torch python3-torchvision python3-numpy libopenblas0-pthread; }) >/dev/null 2>&1 \
        || echo "kdet: WARNING: could not install python3-torch" >&2
    else
      echo "kdet: WARNING: $py cannot import torch; run as root or: sudo apt-get install python3-torch python3-torchvision" >&2
    fi
  fi
  if "$py" -c "import torch" 2>/dev/null && ! "$py" -c "import pycocotools, safetensors" 2>/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      echo "kdet: installing pycocotools and safetensors (PyPI) into $py"
      "$py" -m pip --version >/dev/null 2>&1 || apt-get install -y --no-install-recommends python3-pip >/dev/null 2>&1
      "$py" -m pip install -q --break-system-packages pycocotools safetensors >/dev/null 2>&1 \
        || echo "kdet: WARNING: pip install pycocotools safetensors failed" >&2
    else
      echo "kdet: WARNING: $py lacks pycocotools/safetensors: $py -m pip install --break-system-packages pycocotools safetensors" >&2
    fi
  fi
fi
exit 0
