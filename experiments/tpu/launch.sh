#!/usr/bin/env bash
# Cloud TPU VM batch jobs for onesearch_jax: single host or pod slice.
#
#   experiments/tpu/launch.sh [options] ACTION [-- run.py flags...]
#
# ACTION
#   create   gcloud compute tpus tpu-vm create (add --spot for Spot capacity)
#   setup    ship this checkout (git archive HEAD) to every worker, install
#            the package with the `tpu` extra into ~/onesearch_jax/.venv
#   train    start run.py on every worker (--worker=all), detached; logs in
#            ~/onesearch_train.log on each worker
#   watch    auto-resume loop: recreate + setup + train after a preemption,
#            restart train if it died; stops when the DONE marker exists
#   status   VM state, and whether run.py is alive on worker 0
#   logs     tail the log of worker 0
#   delete   delete the TPU VM
#   all      create, setup, train, then watch
#
# OPTIONS
#   --tpu=NAME            TPU VM name (default onesearch-tpu)
#   --zone=ZONE           (default $ZONE or us-central1-a)
#   --project=PROJECT     (default: gcloud's configured project)
#   --accelerator=TYPE    v5litepod-8 (1 host), v5litepod-16/32/64 (pods),
#                         v4-8, v4-32, v5p-8, v6e-8, ... (default v5litepod-8)
#   --version=RUNTIME     TPU software version (default: chosen per generation)
#   --bucket=gs://B/DIR   the run's workdir: checkpoints, summaries, operative
#                         config. Required by train/watch/all.
#   --sync=direct|rsync   rsync (default on one host): run.py writes a local
#                         ~/workdir that is restored from and copied back to
#                         the bucket every --sync_every seconds.
#                         direct (default on pods): run.py --workdir=gs://...;
#                         run.py refuses that today (the main job's stages
#                         write with pathlib; docs/TPU.md, known gap).
#   --sync_every=SEC      (default 300)
#   --mesh=dp|fsdp|fsdp_tp  gin/mesh/<mesh>.gin (default fsdp)
#   --gin_file=FILE       more gin files for run.py (repeatable)
#   --spot                create a Spot (preemptible) VM
#   --poll=SEC            watch interval (default 120)
#   --dry_run             print every command instead of running it
#
# Everything after `--` goes to run.py (default: --mode=main).
# Re-running `train` or `watch` is safe: run.py resumes from the workdir's
# latest checkpoint (including the data position).
set -euo pipefail

TPU=onesearch-tpu
ZONE=${ZONE:-us-central1-a}
PROJECT=
ACCEL=v5litepod-8
VERSION=
BUCKET=
SYNC=
SYNC_EVERY=300
MESH=fsdp
GIN_FILES=()
SPOT=0
POLL=120
DRY_RUN=0
ACTION=
RUN_ARGS=()
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
REMOTE_DIR='~/onesearch_jax'
LOG='~/onesearch_train.log'

die() { echo "launch.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --tpu=*) TPU=${1#*=} ;;
    --zone=*) ZONE=${1#*=} ;;
    --project=*) PROJECT=${1#*=} ;;
    --accelerator=*) ACCEL=${1#*=} ;;
    --version=*) VERSION=${1#*=} ;;
    --bucket=*) BUCKET=${1#*=} ;;
    --sync=*) SYNC=${1#*=} ;;
    --sync_every=*) SYNC_EVERY=${1#*=} ;;
    --mesh=*) MESH=${1#*=} ;;
    --gin_file=*) GIN_FILES+=("${1#*=}") ;;
    --spot) SPOT=1 ;;
    --poll=*) POLL=${1#*=} ;;
    --dry_run) DRY_RUN=1 ;;
    --) shift; RUN_ARGS=("$@"); break ;;
    -h|--help) sed -n '2,45p' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$ACTION" ] || die "two actions: $ACTION and $1"; ACTION=$1 ;;
  esac
  shift
done
[ -n "$ACTION" ] || die "no ACTION (create|setup|train|watch|status|logs|delete|all)"
[ ${#RUN_ARGS[@]} -gt 0 ] || RUN_ARGS=(--mode=main)
case "$MESH" in dp|fsdp|fsdp_tp) ;; *) die "--mesh=$MESH not in dp|fsdp|fsdp_tp" ;; esac
case "$SYNC" in ""|direct|rsync) ;; *) die "--sync=$SYNC not in direct|rsync" ;; esac
[ -f "$REPO/gin/mesh/$MESH.gin" ] || die "missing $REPO/gin/mesh/$MESH.gin"

# Hosts of a slice: v4/v5p count TensorCores (2 per chip, 4 chips per host);
# v5e/v6e count chips (up to 8 on one host, 4 per host in pods).
num_hosts() {
  local gen=${ACCEL%-*} n=${ACCEL##*-}
  [[ "$n" =~ ^[0-9]+$ ]] || die "cannot read the size of --accelerator=$ACCEL"
  case "$gen" in
    v4|v5p) echo $(( n / 2 <= 4 ? 1 : n / 8 )) ;;
    v5litepod|v5e|v6e) echo $(( n <= 8 ? 1 : n / 4 )) ;;
    *) die "unknown TPU generation in --accelerator=$ACCEL" ;;
  esac
}
HOSTS=$(num_hosts)
if [ -z "$VERSION" ]; then
  case "${ACCEL%-*}" in
    v4) VERSION=tpu-ubuntu2204-base ;;
    v5litepod|v5e) VERSION=v2-alpha-tpuv5-lite ;;
    v5p) VERSION=v2-alpha-tpuv5 ;;
    v6e) VERSION=v2-alpha-tpuv6e ;;
  esac
fi
if [ -z "$SYNC" ]; then
  if [ "$HOSTS" -gt 1 ]; then SYNC=direct; else SYNC=rsync; fi
fi
if [ "$HOSTS" -gt 1 ] && [ "$SYNC" = rsync ]; then
  die "--sync=rsync is single-host only: a pod's hosts must write one shared gs:// checkpoint"
fi

exec 3>&1  # dry-run lines go to the real stdout, even from $(...) captures
run() {  # run or print one command
  if [ "$DRY_RUN" = 1 ]; then
    { printf '+'; printf ' %q' "$@"; printf '\n'; } >&3
  else
    "$@"
  fi
}

GCLOUD=(gcloud compute tpus tpu-vm)
LOC=(--zone="$ZONE")
[ -z "$PROJECT" ] || LOC+=(--project="$PROJECT")

ssh_all() { run "${GCLOUD[@]}" ssh "$TPU" "${LOC[@]}" --worker=all --command="$1"; }
ssh_0() { run "${GCLOUD[@]}" ssh "$TPU" "${LOC[@]}" --worker=0 --command="$1"; }

need_bucket() {
  [ -n "$BUCKET" ] || die "$ACTION needs --bucket=gs://BUCKET/DIR (the run's workdir)"
  case "$BUCKET" in gs://*) ;; *) die "--bucket=$BUCKET is not a gs:// path" ;; esac
}

do_create() {
  local extra=()
  [ "$SPOT" = 1 ] && extra+=(--spot)
  run "${GCLOUD[@]}" create "$TPU" "${LOC[@]}" --accelerator-type="$ACCEL" \
    --version="$VERSION" "${extra[@]}"
}

do_setup() {
  local tarball=/tmp/onesearch_jax_$$.tar.gz
  run git -C "$REPO" archive --format=tar.gz -o "$tarball" HEAD
  run "${GCLOUD[@]}" scp "$tarball" "$TPU:onesearch_jax.tar.gz" "${LOC[@]}" --worker=all
  ssh_all "set -e; mkdir -p $REMOTE_DIR && tar xzf ~/onesearch_jax.tar.gz -C $REMOTE_DIR \
&& cd $REMOTE_DIR && python3 -m venv .venv && .venv/bin/pip install -q --upgrade pip \
&& .venv/bin/pip install -q -c constraints.txt -e '.[tpu]' \
&& .venv/bin/python -c 'import jax; print(jax.process_index(), jax.local_device_count(), jax.device_count())'"
}

# The job script each worker runs (generated here, shipped base64-encoded so
# no quoting survives two shells; run.py flags are %q-quoted exactly once).
job_script() {
  local workdir args=() f
  workdir=$(printf '%q' "$BUCKET")
  [ "$SYNC" = rsync ] && workdir='"$HOME/workdir"'
  args+=(--gin_file="gin/mesh/$MESH.gin")
  for f in "${GIN_FILES[@]}"; do args+=(--gin_file="$f"); done
  args+=("${RUN_ARGS[@]}")
  local bucket multi=0
  bucket=$(printf '%q' "$BUCKET")
  [ "$HOSTS" -gt 1 ] && multi=1
  echo '#!/usr/bin/env bash'
  echo "# written by experiments/tpu/launch.sh for $ACCEL ($HOSTS host(s))"
  echo 'set -u'
  echo "cd $REMOTE_DIR"
  echo "export ONESEARCH_MULTIHOST=$multi"
  if [ "$SYNC" = rsync ]; then
    echo 'mkdir -p "$HOME/workdir"'
    echo "gcloud storage rsync -r $bucket \"\$HOME/workdir\" || true  # resume state"
    echo "( while sleep $SYNC_EVERY; do gcloud storage rsync -r \"\$HOME/workdir\" $bucket; done ) &"
    echo 'sync_pid=$!'
  fi
  printf '.venv/bin/python run.py --workdir=%s' "$workdir"
  printf ' %q' "${args[@]}"
  printf '\n'
  echo 'rc=$?'
  if [ "$SYNC" = rsync ]; then
    echo 'kill "$sync_pid"'
    echo "gcloud storage rsync -r \"\$HOME/workdir\" $bucket"
  fi
  echo "if [ \"\$rc\" = 0 ]; then echo done | gcloud storage cp - $bucket/DONE; fi"
  echo 'exit "$rc"'
}

do_train() {
  need_bucket
  echo "launch.sh: $ACCEL = $HOSTS host(s); mesh gin/mesh/$MESH.gin; workdir $BUCKET ($SYNC)" >&2
  local script b64
  script=$(job_script)
  if [ "$DRY_RUN" = 1 ]; then
    echo "# job script (~/onesearch_job.sh on every worker):"
    printf '%s\n' "$script" | sed 's/^/#   /'
  fi
  b64=$(printf '%s\n' "$script" | base64 | tr -d '\n')
  ssh_all "echo $b64 | base64 -d > ~/onesearch_job.sh && setsid nohup bash ~/onesearch_job.sh > $LOG 2>&1 < /dev/null &"
}

# In --dry_run the VM state and the liveness check are simulated with
# DRY_RUN_STATE (default PREEMPTED) and DRY_RUN_TRAINING (default 0).
vm_state() {
  if [ "$DRY_RUN" = 1 ]; then
    run "${GCLOUD[@]}" describe "$TPU" "${LOC[@]}" --format='value(state)'
    echo "${DRY_RUN_STATE:-PREEMPTED}"
  else
    "${GCLOUD[@]}" describe "$TPU" "${LOC[@]}" --format='value(state)' 2>/dev/null || echo MISSING
  fi
}

is_done() {
  if [ "$DRY_RUN" = 1 ]; then run gcloud storage ls "$BUCKET/DONE"; return 1; fi
  gcloud storage ls "$BUCKET/DONE" >/dev/null 2>&1
}

is_training() {
  if [ "$DRY_RUN" = 1 ]; then
    ssh_0 "pgrep -f 'python run.py' >/dev/null"
    [ "${DRY_RUN_TRAINING:-0}" = 1 ]
    return
  fi
  ssh_0 "pgrep -f 'python run.py' >/dev/null"
}

do_watch() {
  need_bucket
  while true; do
    if is_done; then echo "launch.sh: $BUCKET/DONE exists; finished" >&2; return 0; fi
    local state
    state=$(vm_state | tail -1)
    case "$state" in
      READY)
        is_training || { echo "launch.sh: run.py not running; restarting (resumes)" >&2; do_train; } ;;
      PREEMPTED|TERMINATED|MISSING)
        echo "launch.sh: VM is $state; recreating and resuming" >&2
        [ "$state" = MISSING ] || run "${GCLOUD[@]}" delete "$TPU" "${LOC[@]}" --quiet
        do_create && do_setup && do_train ;;
      *) echo "launch.sh: VM is $state; waiting" >&2 ;;
    esac
    [ "$DRY_RUN" = 1 ] && return 0
    sleep "$POLL"
  done
}

case "$ACTION" in
  create) do_create ;;
  setup) do_setup ;;
  train) do_train ;;
  watch) do_watch ;;
  status) vm_state; is_training && echo "run.py: running" || echo "run.py: not running" ;;
  logs) ssh_0 "tail -n 50 $LOG" ;;
  delete) run "${GCLOUD[@]}" delete "$TPU" "${LOC[@]}" --quiet ;;
  all) need_bucket; do_create; do_setup; do_train; do_watch ;;
  *) die "unknown ACTION $ACTION" ;;
esac
