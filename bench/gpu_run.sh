#!/usr/bin/env bash
# The one prepared GPU measurement (see DESIGN.md, "Running on a real GPU"), in order of value,
# each stage under a time cap and all of them under one deadline (GPU_RUN_SECONDS, 500 by
# default) so that the whole run fits one lease: the adapter templora gets; per-kernel GPU time
# of a training step, of decoding and of Temp-Lora writing on stories260K (bench/profile.ts);
# the SmolLM2-135M-shaped GGUF files (bench/make_gguf.ts, 1 GB) and the same profile on the
# Q8_0 one; the model, Temp-Lora and kernel benchmarks (GPU time from timestamps beside wall
# time: see bench/harness.ts); last templora against llama.cpp's Vulkan build on the same files
# (bench/peer.ts), with Temp-Lora's writing speed. Every stage's
# full output goes to $OUT/gpu_run.txt (or /tmp/gpu_run.txt), the peer's samples to
# $OUT/peer_vulkan.json, and each stage's summary to stdout. Needs .gpu/ from
# bench/gpu_pack.sh, or a deno on PATH with network access and ../shared beside the checkout.
# GPU_RUN_STAGES="probe model_bench ..." runs only the stages named (see the stage lines below).
# llama.cpp's CUDA build is not packed (too large), so the CUDA peer is not measured.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp}"
rm -f "$out/gpu_run.txt"
deadline=$((SECONDS + ${GPU_RUN_SECONDS:-500}))
if [ -f .gpu/deno.xz ]; then
  xz -dc .gpu/deno.xz > /tmp/deno && chmod +x /tmp/deno
  DENO=/tmp/deno
  rm -rf /tmp/deno_dir && mkdir -p /tmp/deno_dir && xz -dc .gpu/deno_dir.tar.xz | tar -C /tmp/deno_dir -xf -
  export DENO_DIR=/tmp/deno_dir
  export LD_LIBRARY_PATH="$PWD/.gpu/vulkan/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  cached="--cached-only --no-lock"
  if [ ! -e ../shared ] && [ -f .gpu/shared.tar.xz ]; then
    mkdir -p /tmp/gpu_shared && xz -dc .gpu/shared.tar.xz | tar -C /tmp/gpu_shared -xf -
    ln -sfn /tmp/gpu_shared ../shared
  fi
else
  DENO=deno
  cached="--no-lock"
fi
# NVIDIA's Vulkan driver needs glvnd (see gpu_pack.sh), and may sit outside the loader's path.
if command -v nvidia-smi >/dev/null && ! ldconfig -p | grep -q libGLdispatch && ls .gpu/glvnd/*.deb >/dev/null 2>&1; then
  for f in .gpu/glvnd/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json; do
  if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ]; then export VK_DRIVER_FILES="$icd"; fi
done
"$DENO" --version | head -n 1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader

# stage NAME CAP_SECONDS FILTER COMMAND...: runs COMMAND for at most CAP seconds (less if the
# deadline is nearer), its output to $out/gpu_run.txt, the lines FILTER (an extended regex)
# picks to stdout.
stage() {
  local name=$1 cap=$2 filter=$3
  shift 3
  if [ -n "${GPU_RUN_STAGES:-}" ] && [[ " $GPU_RUN_STAGES " != *" $name "* ]]; then return; fi
  local left=$((deadline - SECONDS))
  if [ "$left" -lt 15 ]; then echo "== $name: skipped (deadline)"; return; fi
  cap=${GPU_RUN_CAP:-$cap} # a short cap for every stage checks the plumbing alone
  [ "$cap" -gt "$left" ] && cap=$left
  echo "== $name (at most ${cap} s)"
  local t0=$SECONDS
  timeout -k 5 "$cap" "$@" > /tmp/gpu_stage.txt 2>&1
  local rc=$?
  { echo "== $name (rc $rc)"; cat /tmp/gpu_stage.txt; } >> "$out/gpu_run.txt"
  grep -aE "$filter" /tmp/gpu_stage.txt | grep -av $'\e' | grep -avE '^\| (benchmark|-+) '
  echo "-- $name: rc $rc in $((SECONDS - t0)) s"
}

tables='^\||^adapter|^class|^limits|load average|copy kernel|GPU time|wall|^(wrote|Smol)|rror'
stage probe 30 "$tables" "$DENO" run -A $cached bench/gpu_probe.ts
if ! grep -q '^adapter:' /tmp/gpu_stage.txt; then
  tail -n 5 /tmp/gpu_stage.txt
  ldconfig -p | grep -i vulkan
  icd=$(find /usr /etc -name 'nvidia_icd*.json' 2>/dev/null | head -n 1)
  echo "no adapter; Vulkan drivers found: ${icd:-none}"
  if [ -n "$icd" ]; then
    export VK_DRIVER_FILES="$icd"
    stage probe_again 30 "$tables" "$DENO" run -A $cached bench/gpu_probe.ts
  fi
fi
stage profile_stories 60 "$tables" "$DENO" run -A $cached bench/profile.ts --top 12
stage bench_models 120 "$tables" "$DENO" run -A $cached bench/make_gguf.ts
stage profile_smollm2_q8 60 "$tables" "$DENO" run -A $cached bench/profile.ts --top 12 \
  --model bench/models/smollm2-135m-shape-q8_0.gguf
for bench in model templora kernels matvec attention; do
  stage "${bench}_bench" 60 "$tables" "$DENO" bench -A $cached "bench/${bench}_bench.ts"
done
stage peer_vulkan 150 "$tables|llama.cpp" "$DENO" run -A $cached bench/peer.ts --peer-gpu vulkan \
  --rounds 2 --json "$out/peer_vulkan.json"
