#!/usr/bin/env bash
# The one prepared GPU measurement: kernel benchmarks, then model prefill/decode and Temp-Lora
# costs, each printing its table; copies of the output go to $OUT when it is set. Needs .gpu/
# from bench/gpu_pack.sh (or a deno on PATH with network access).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp}"
if [ -f .gpu/deno.xz ]; then
  xz -dc .gpu/deno.xz > /tmp/deno && chmod +x /tmp/deno
  DENO=/tmp/deno
  export DENO_DIR="$PWD/.gpu/deno_dir"
  export LD_LIBRARY_PATH="$PWD/.gpu/vulkan/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  cached="--cached-only --no-lock"
else
  DENO=deno
  cached=""
fi
"$DENO" --version | head -n 1
for bench in kernels matvec attention model templora; do
  echo "== $bench"
  # Keep our summary tables, not deno bench's own coloured per-iteration table.
  "$DENO" bench -A $cached "bench/${bench}_bench.ts" 2>&1 | tee "$out/${bench}_bench.txt" |
    grep -E '^\||adapter:|load average|copy kernel' | grep -v $'\e' | grep -vE '^\| (benchmark|-+) '
done
