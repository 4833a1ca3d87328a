#!/usr/bin/env bash
# Prepares .gpu/ for a GPU machine that has no network (see DESIGN.md, "Running on a real GPU"):
# Deno itself (xz-compressed), the Vulkan loader from Debian's packages, and a Deno cache with
# everything the benchmarks import. Carry `.gpu` with the checkout, then run bench/gpu_run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu && mkdir -p .gpu/vulkan
deno_bin=$(readlink -f "$(command -v deno)")
xz -T0 -6 -c "$deno_bin" > .gpu/deno.xz
(cd .gpu && apt-get download libvulkan1 >/dev/null && dpkg -x libvulkan1_*.deb vulkan && rm libvulkan1_*.deb)
# --no-lock: cache only what the benchmarks import, not every package the lockfile names.
DENO_DIR="$PWD/.gpu/deno_dir" deno cache --no-lock bench/*_bench.ts >/dev/null
du -sh .gpu
