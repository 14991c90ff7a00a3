# Sourced by the one-call device scripts (gpu_final3.sh, gpu_session4*.sh) after they set R (a results
# folder on the GPU machine) and TGZ (the archive's name under $OUT): unpacks the bundle (carry
# .bundle/{install.sh,wheels}), names the card, and defines
#   step NAME SECONDS COMMAND...  run COMMAND under a time limit into $R/NAME.log, print its table rows;
#   bench NAME SECONDS ARGS...     step with `ditic bench --out $R/NAME ARGS...`.
# The archive is rewritten after every step, so a time-out still brings back what finished.
set -uo pipefail
# SITE=/tmp/site: the bundle is already unpacked there (another script of the same call did it)
export PYTHONPATH=${SITE:-$(bash .bundle/install.sh)}:$PWD PYTHONUNBUFFERED=1
mkdir -p "$R"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
step() {
  local name=$1 limit=$2; shift 2
  echo "=== $name: $*"
  timeout "$limit" "$@" > "$R/$name.log" 2>&1 || echo "!!! $name failed ($?)"
  grep -E '^\| ditic|^- ditic|passed|failed|^\{' "$R/$name.log" | tail -8
  tar czf "$OUT/$TGZ" -C "$R" .
}
bench() { local name=$1 limit=$2; shift 2; step "$name" "$limit" python3 -m jobs.cli bench --out "$R/$name" "$@"; }
