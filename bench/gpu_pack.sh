#!/usr/bin/env bash
# Prepares .gpu/ for a GPU machine that has no network (see DESIGN.md, "Running on a real GPU"):
# Deno itself (xz-compressed), the Vulkan loader from Debian's packages, and a Deno cache with
# everything the benchmarks import, llama.cpp's prebuilt builds (node-llama-cpp) included, packed
# as one xz tarball. Carry `.gpu` with the checkout, then run bench/gpu_run.sh.
#
# node-llama-cpp's platform packages: the CPU build (@node-llama-cpp/linux-x64, ~5 MB packed) and
# the Vulkan build (linux-x64-vulkan, ~11 MB) travel; the CUDA builds (linux-x64-cuda and its
# -cuda-ext, 538 MB unpacked) cannot (the carry holds 64 MiB), nor can the ARM ones. Their
# package folders stay, emptied of their binaries, because `--cached-only` wants every optional
# package of the lockfile-free resolution present; llama.cpp's source bundle (gitRelease.bundle,
# only for building from source, which the benchmarks never do) is dropped too. The files of
# ../shared that the benchmarks read (../shared does not travel) go as .gpu/shared.tar.xz.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu && mkdir -p .gpu/vulkan
deno_bin=$(readlink -f "$(command -v deno)")
xz -T0 -6 -c "$deno_bin" > .gpu/deno.xz
(cd .gpu && apt-get download libvulkan1 >/dev/null && dpkg -x libvulkan1_*.deb vulkan && rm libvulkan1_*.deb)
# NVIDIA's Vulkan driver (libGLX_nvidia) needs glvnd's dispatch libraries, which a CUDA image
# may lack: without them the loader finds the driver but cannot create an instance.
mkdir -p .gpu/glvnd
(cd .gpu/glvnd && apt-get download libglvnd0 libglx0 libegl1 libgl1 libopengl0 libgles2 >/dev/null)
cache=$(mktemp -d)
trap 'rm -rf "$cache"' EXIT
# --no-lock: cache only what the benchmarks import, not every package the lockfile names.
DENO_DIR="$cache" deno cache --no-lock bench/*_bench.ts bench/peer.ts bench/make_gguf.ts bench/profile.ts \
  bench/gpu_probe.ts >/dev/null
DENO_DIR="$cache" deno cache --no-lock npm:node-llama-cpp@3.21.1 >/dev/null 2>&1
npm_dir="$cache/npm/registry.npmjs.org"
for variant in linux-arm64 linux-armv7l linux-x64-cuda linux-x64-cuda-ext; do
  rm -rf "$npm_dir/@node-llama-cpp/$variant"/*/bins
done
rm -f "$npm_dir"/node-llama-cpp/*/llama/gitRelease.bundle
tar -C "$cache" -cf - . | xz -T0 -6 > .gpu/deno_dir.tar.xz
tar -C ../shared -cf - models/stories260K models/gguf/stories260K-f32.gguf \
  models/gguf/stories260K-q8_0.gguf models/gguf/tiny-llama-spm-q4_k_m.gguf \
  data/books/austen-emma.txt | xz -T0 -6 > .gpu/shared.tar.xz
du -sh .gpu
