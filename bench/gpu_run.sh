#!/usr/bin/env bash
# The one prepared GPU measurement: kernel benchmarks, model prefill/decode and Temp-Lora costs,
# then templora against llama.cpp on the same GGUF files (bench/peer.ts: llama.cpp on the CPU at
# 1, 2 and all cores, then llama.cpp's Vulkan build on the GPU), each printing its table; copies
# of the output go to $OUT when it is set. The SmolLM2-135M-shaped GGUF files (1 GB) are written
# here first by bench/make_gguf.ts (about a minute). Needs .gpu/ from bench/gpu_pack.sh (or a
# deno on PATH with network access). llama.cpp's CUDA build is not packed (too large), so the
# CUDA peer is not measured.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp}"
if [ -f .gpu/deno.xz ]; then
  xz -dc .gpu/deno.xz > /tmp/deno && chmod +x /tmp/deno
  DENO=/tmp/deno
  if [ -f .gpu/deno_dir.tar.xz ]; then
    rm -rf /tmp/deno_dir && mkdir -p /tmp/deno_dir && xz -dc .gpu/deno_dir.tar.xz | tar -C /tmp/deno_dir -xf -
    export DENO_DIR=/tmp/deno_dir
  else
    export DENO_DIR="$PWD/.gpu/deno_dir"
  fi
  export LD_LIBRARY_PATH="$PWD/.gpu/vulkan/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  cached="--cached-only --no-lock"
else
  DENO=deno
  cached="--no-lock"
fi
"$DENO" --version | head -n 1
for bench in kernels matvec attention model templora; do
  echo "== $bench"
  # Keep our summary tables, not deno bench's own coloured per-iteration table.
  "$DENO" bench -A $cached "bench/${bench}_bench.ts" 2>&1 | tee "$out/${bench}_bench.txt" |
    grep -E '^\||adapter:|load average|copy kernel' | grep -v $'\e' | grep -vE '^\| (benchmark|-+) '
done
echo "== bench models"
"$DENO" run -A $cached bench/make_gguf.ts 2>&1 | tee "$out/make_gguf.txt" | grep -E '^(wrote|Smol)'
cores=$(nproc)
echo "== peer: llama.cpp on the CPU (1, 2 and $cores threads)"
"$DENO" run -A $cached bench/peer.ts --threads "1,2,$cores" --json "$out/peer_cpu.json" \
  2> "$out/peer_cpu.err" | tee "$out/peer_cpu.txt" | sed -n '/^adapter:/,$p'
echo "== peer: llama.cpp's Vulkan build on the GPU"
"$DENO" run -A $cached bench/peer.ts --peer-gpu vulkan --no-templora-writing \
  --json "$out/peer_vulkan.json" 2> "$out/peer_vulkan.err" | tee "$out/peer_vulkan.txt" |
  sed -n '/^adapter:/,$p'
