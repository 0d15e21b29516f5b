#!/usr/bin/env bash
# Build llama.cpp's own llama-server, the reference benchmarks/concurrency.py compares genforge with: the
# llama.cpp sources vendored in the llama-cpp-python sdist genforge runs (same version, same kernels), with
# scripts/install.sh's AMX-off flags, linked statically. Prints the binary's path; a second run reuses it.
#
#   LLAMA_SERVER=$(bash benchmarks/build_llama_server.sh) .venv/bin/python benchmarks/concurrency.py
#
# Needs cmake and a C++ compiler (Debian: apt-get install -y cmake g++); about 6 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
VPY=.venv/bin/python
version=$("$VPY" -c 'import llama_cpp; print(llama_cpp.__version__)')
out="${XDG_CACHE_HOME:-$HOME/.cache}/genforge/llama-server-$version"
if [ ! -x "$out/llama-server" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "building llama-server from llama-cpp-python $version's llama.cpp (a few minutes)..." >&2
  "$VPY" -m pip download -q --no-deps --no-binary :all: -d "$work" "llama-cpp-python==$version" >&2
  tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
  flags=()
  if [ "$(uname -m)" = "x86_64" ]; then
    noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    flags=(-DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF "-DCMAKE_C_FLAGS=$noamx" "-DCMAKE_CXX_FLAGS=$noamx")
  fi
  cmake -S "$work"/llama_cpp_python-*/vendor/llama.cpp -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF "${flags[@]}" >&2
  cmake --build "$work/build" --target llama-server -j "$(nproc)" >&2
  mkdir -p "$out"
  cp "$work/build/bin/llama-server" "$out/llama-server"
fi
echo "$out/llama-server"
