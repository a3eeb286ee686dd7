#!/usr/bin/env bash
# Runs jfacediag.train on this machine, on several GPU hosts (ssh or SLURM), or on a Cloud TPU VM (single host or pod
# slice).
#
#   ./launch.sh [--dry-run] local [--processes N] [--devices-per-process D] -- --config configs/demo.py [train flags]
#   (--dry-run may also come after the target or its options, anywhere before the `--`)
#   ./launch.sh [--dry-run] gpu (--hosts FILE | inside a SLURM allocation) [--port P] [--repo DIR] -- TRAIN FLAGS
#   ./launch.sh [--dry-run] tpu create|setup|run|logs|delete [settings] [-- TRAIN FLAGS]
#   ./launch.sh [--dry-run] slurm --nodes N --gpus-per-node G [--time T] [--partition P] [--account A] [--submit]
#               [--script FILE] [--repo DIR] -- TRAIN FLAGS
#
# Every command it runs is printed first ("+ ..."); --dry-run prints them and runs nothing.
#
# local  N processes here (default 1). With N > 1 they form one JAX job through jax.distributed on localhost
#        (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID; CPU collectives use gloo). With
#        --devices-per-process D each process gets D virtual CPU devices (XLA_FLAGS), for testing sharding.
# gpu    one process per host, using all of its GPUs. --hosts FILE lists one host per line (the first one is the
#        coordinator); each is reached with ssh and runs in --repo (default: this directory's path) with its
#        .venv. Inside SLURM (SLURM_JOB_ID set, no --hosts) it runs `srun` with one task per node and JAX reads the
#        SLURM variables itself.
# slurm  writes an sbatch script (--script, default runs/slurm/<job name>.sbatch) that starts one process per GPU
#        through srun (nodes x gpus-per-node tasks); JAX reads SLURM's variables itself (SLURM_JOB_ID,
#        SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID: process i of a node takes its GPU i).
#        --submit also runs sbatch on it; --dry-run prints the script and writes nothing.
# tpu    a Cloud TPU VM through `gcloud compute tpus tpu-vm`:
#          create   creates the VM;
#          setup    copies this checkout (git archive of HEAD) to every worker and installs it with jax[tpu];
#          run      first compiles the run for the accelerator type here (python -m jfacediag.aot: does it compile,
#                   does it fit in HBM, how fast could it be) and stops before touching the VM when it does not;
#                   --no-preflight skips that. Then starts training on every worker (--worker=all) in the
#                   background, output in ~/jfacediag/train.log, with --config.dtype=bfloat16 unless the training
#                   flags give a dtype;
#          logs     prints the last lines of that log from every worker;
#          delete   deletes the VM.
#        Settings (flag or environment variable): --name/TPU_NAME, --project/TPU_PROJECT, --zone/TPU_ZONE,
#        --accelerator-type/TPU_ACCELERATOR_TYPE (create, and run's pre-flight), --version/TPU_VERSION (create, the TPU software
#        version, e.g. tpu-ubuntu2204-base). The workdir may be a gs:// path: orbax and tf.data write it directly.
#
# Credentials are gcloud's and ssh's own: this script never reads, writes or prints any.
set -euo pipefail

die() { echo "launch.sh: error: $*" >&2; exit 2; }
DRY_RUN=0

# Prints a command (shell-quoted) and runs it unless --dry-run.
run() {
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [[ $DRY_RUN == 0 ]]; then "$@"; fi
}

# The same, in the background (the command is printed before the next one starts); its pid goes to PIDS.
PIDS=()
run_bg() {
  printf '+'; printf ' %q' "$@"; printf ' &\n'
  if [[ $DRY_RUN == 0 ]]; then "$@" & PIDS+=($!); fi
}

# Waits for every PIDS entry; reports each failure by its label; returns the last failing status.
wait_all() {
  local i status=0
  for i in "${!PIDS[@]}"; do
    wait "${PIDS[$i]}" || { status=$?; echo "launch.sh: $1 $i exited with $status" >&2; }
  done
  return $status
}

quote() { local out="" a; for a in "$@"; do out+=" $(printf '%q' "$a")"; done; echo "${out# }"; }

need() {  # need VALUE FLAG ENVVAR WHAT
  [[ -n $1 ]] || die "$4 is not set: pass $2 or set $3"
}

need_train_args() {
  [[ $# -gt 0 ]] || die "no training flags: add -- --config configs/<name>.py [--workdir DIR] [--config.x=y ...]"
}

# Values that reach a remote shell or an ssh command line are checked, then quoted anyway.
check_port() {
  [[ $1 =~ ^[0-9]{1,5}$ ]] && (( 10#$1 >= 1 && 10#$1 <= 65535 )) || die "--port must be a number 1-65535, got '$1'"
}
check_host() {  # [user@]host, no leading dash (ssh would read it as an option), nothing a shell would expand.
  [[ $1 =~ ^([A-Za-z0-9._][A-Za-z0-9._-]*@)?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]] ||
    die "--hosts: '$1' is not a host name ([user@]host: letters, digits, dots and dashes)"
}

# == local =============================================================================================================
cmd_local() {
  local procs=1 devices=0 port=${JFACEDIAG_PORT:-12355}
  while [[ $# -gt 0 ]]; do
    case $1 in
      --processes) procs=$2; shift 2 ;;
      --devices-per-process) devices=$2; shift 2 ;;
      --port) port=$2; shift 2 ;;
      --) shift; break ;;
      *) die "local: unknown option $1" ;;
    esac
  done
  need_train_args "$@"
  [[ $procs =~ ^[1-9][0-9]*$ ]] || die "--processes must be a positive integer, got $procs"
  [[ $devices =~ ^[0-9]+$ ]] || die "--devices-per-process must be a non-negative integer, got $devices"
  check_port "$port"
  local python=${PYTHON:-python}
  local -a envs=()
  if [[ $devices != 0 ]]; then envs+=("XLA_FLAGS=--xla_force_host_platform_device_count=$devices"); fi
  if [[ $procs == 1 ]]; then
    run env "${envs[@]}" "$python" -m jfacediag.train "$@"
    return
  fi
  local i
  for ((i = 0; i < procs; i++)); do
    run_bg env "${envs[@]}" JAX_COORDINATOR_ADDRESS="localhost:$port" JAX_NUM_PROCESSES="$procs" JAX_PROCESS_ID="$i" \
      "$python" -m jfacediag.train "$@"
  done
  wait_all process
}

# == gpu ===============================================================================================================
cmd_gpu() {
  local hosts_file="" port=${JFACEDIAG_PORT:-12355} repo=$PWD
  while [[ $# -gt 0 ]]; do
    case $1 in
      --hosts) hosts_file=$2; shift 2 ;;
      --port) port=$2; shift 2 ;;
      --repo) repo=$2; shift 2 ;;
      --) shift; break ;;
      *) die "gpu: unknown option $1" ;;
    esac
  done
  need_train_args "$@"
  check_port "$port"
  if [[ -z $hosts_file ]]; then
    [[ -n ${SLURM_JOB_ID:-} ]] || die "gpu needs --hosts FILE (one host per line) or a SLURM allocation (SLURM_JOB_ID)"
    run srun --ntasks="${SLURM_NNODES:-1}" --ntasks-per-node=1 "$repo/.venv/bin/python" -m jfacediag.train "$@" \
      --config.distributed=yes
    return
  fi
  [[ -f $hosts_file ]] || die "--hosts $hosts_file: no such file"
  local -a hosts=()
  local h
  while read -r h; do
    h=${h%%#*}; h=${h//[[:space:]]/}
    if [[ -n $h ]]; then check_host "$h"; hosts+=("$h"); fi
  done < "$hosts_file"
  [[ ${#hosts[@]} -gt 0 ]] || die "--hosts $hosts_file lists no host"
  local n=${#hosts[@]} coordinator="${hosts[0]#*@}:$port" i
  for ((i = 0; i < n; i++)); do
    run_bg ssh -- "${hosts[$i]}" "cd $(quote "$repo") && JAX_COORDINATOR_ADDRESS=$(quote "$coordinator") \
JAX_NUM_PROCESSES=$n JAX_PROCESS_ID=$i .venv/bin/python -m jfacediag.train $(quote "$@")"
  done
  wait_all "process (host order)"
}

# == slurm =============================================================================================================
cmd_slurm() {
  local nodes=1 gpus="" time=24:00:00 partition="" account="" submit=0 repo=$PWD job=jfacediag script=""
  while [[ $# -gt 0 ]]; do
    case $1 in
      --nodes) nodes=$2; shift 2 ;;
      --gpus-per-node) gpus=$2; shift 2 ;;
      --time) time=$2; shift 2 ;;
      --partition) partition=$2; shift 2 ;;
      --account) account=$2; shift 2 ;;
      --job-name) job=$2; shift 2 ;;
      --script) script=$2; shift 2 ;;
      --repo) repo=$2; shift 2 ;;
      --submit) submit=1; shift ;;
      --) shift; break ;;
      *) die "slurm: unknown option $1" ;;
    esac
  done
  need_train_args "$@"
  [[ $nodes =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive integer, got '$nodes'"
  [[ $gpus =~ ^[1-9][0-9]*$ ]] || die "--gpus-per-node must be a positive integer (one process per GPU), got '$gpus'"
  [[ $time =~ ^[0-9:-]+$ ]] || die "--time must look like HH:MM:SS or D-HH:MM:SS, got '$time'"
  local word
  for word in "$partition" "$account" "$job"; do
    [[ -z $word || $word =~ ^[A-Za-z0-9._,-]+$ ]] || die "slurm: '$word' is not a partition, account or job name"
  done
  # sbatch reads its #SBATCH lines itself, without a shell's quoting: the checkout's path must be plain.
  [[ $repo =~ ^[A-Za-z0-9._/@+-]+$ ]] || die "slurm: --repo '$repo' has characters an #SBATCH line cannot carry"
  script=${script:-runs/slurm/$job.sbatch}
  local text
  text=$(cat <<SBATCH
#!/usr/bin/env bash
#SBATCH --job-name=$job
#SBATCH --nodes=$nodes
#SBATCH --ntasks-per-node=$gpus
#SBATCH --gpus-per-node=$gpus
#SBATCH --time=$time
#SBATCH --output=$repo/runs/slurm/%x-%j.out${partition:+
#SBATCH --partition=$partition}${account:+
#SBATCH --account=$account}
# Written by ./launch.sh slurm: one process per GPU, $((nodes * gpus)) in all. JAX reads SLURM's variables (job id,
# node list, task count, task id, local id) and gives process i of each node its GPU i.
set -euo pipefail
cd $repo
if [[ -f .venv/bin/activate ]]; then . .venv/bin/activate; fi
srun --kill-on-bad-exit=1 python -m jfacediag.train $(quote "$@") --config.distributed=yes
SBATCH
)
  if [[ $DRY_RUN == 1 ]]; then
    printf '# %s\n%s\n' "$script" "$text"
  else
    mkdir -p "$(dirname "$script")" "$repo/runs/slurm"
    printf '%s\n' "$text" > "$script"
    echo "launch.sh: wrote $script ($nodes node(s) x $gpus GPU(s)); submit it with: sbatch $script"
  fi
  if [[ $submit == 1 ]]; then run sbatch "$script"; fi
}

# == tpu ===============================================================================================================
cmd_tpu() {
  local action=${1:-}
  [[ -n $action ]] || die "tpu needs an action: create, setup, run, logs or delete"
  shift
  local name=${TPU_NAME:-} project=${TPU_PROJECT:-} zone=${TPU_ZONE:-} type=${TPU_ACCELERATOR_TYPE:-}
  local version=${TPU_VERSION:-} preflight=1
  while [[ $# -gt 0 ]]; do
    case $1 in
      --no-preflight) preflight=0; shift ;;
      --name) name=$2; shift 2 ;;
      --project) project=$2; shift 2 ;;
      --zone) zone=$2; shift 2 ;;
      --accelerator-type) type=$2; shift 2 ;;
      --version) version=$2; shift 2 ;;
      --) shift; break ;;
      *) die "tpu: unknown option $1" ;;
    esac
  done
  need "$name" --name TPU_NAME "the TPU VM name"
  need "$project" --project TPU_PROJECT "the Google Cloud project"
  need "$zone" --zone TPU_ZONE "the zone"
  local -a tpu=(gcloud compute tpus tpu-vm) where=(--project="$project" --zone="$zone")
  local remote='cd ~/jfacediag && . .venv/bin/activate'
  case $action in
    create)
      need "$type" --accelerator-type TPU_ACCELERATOR_TYPE "the accelerator type (e.g. v4-8, v5litepod-16)"
      need "$version" --version TPU_VERSION "the TPU software version (e.g. tpu-ubuntu2204-base)"
      run "${tpu[@]}" create "$name" "${where[@]}" --accelerator-type="$type" --version="$version" ;;
    setup)
      local archive
      if [[ $DRY_RUN == 0 ]]; then
        archive=$(mktemp -d)/jfacediag-src.tar.gz  # Private: not a fixed, predictable path in /tmp.
      else
        archive='$TMPDIR/jfacediag-src.tar.gz'
      fi
      run git archive --format=tar.gz -o "$archive" HEAD
      run "${tpu[@]}" scp "$archive" "$name:~/jfacediag-src.tar.gz" "${where[@]}" --worker=all
      run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="mkdir -p ~/jfacediag && \
tar xzf ~/jfacediag-src.tar.gz -C ~/jfacediag && cd ~/jfacediag && python3 -m venv .venv && . .venv/bin/activate && \
pip install -q -e . 'jax[tpu]>=0.10.2,<0.11'" ;;
    run)
      need_train_args "$@"
      # bfloat16 compute is the TPU default (MXU-native); --config.dtype=float32 among the flags keeps float32.
      local dtype=" --config.dtype=bfloat16" a
      for a in "$@"; do [[ $a == --config.dtype=* || $a == --config.dtype ]] && dtype=""; done
      if [[ $preflight == 1 ]]; then
        need "$type" --accelerator-type TPU_ACCELERATOR_TYPE "the accelerator type, for the pre-flight compile (e.g. \
v5litepod-16; --no-preflight skips it)"
        local -a aot_args=() skip=0
        for a in "$@"; do  # The training flags, less --workdir (the pre-flight writes nothing there).
          if [[ $skip == 1 ]]; then skip=0; continue; fi
          [[ $a == --workdir ]] && { skip=1; continue; }
          [[ $a == --workdir=* ]] && continue
          aot_args+=("$a")
        done
        # shellcheck disable=SC2086  # $dtype is empty or one flag.
        run "${PYTHON:-python}" -m jfacediag.aot --topology "$type" "${aot_args[@]}" $dtype \
          || die "the pre-flight says this run does not compile or fit on $type (above); nothing was started on \
$name. Fix the run, or pass --no-preflight to skip the check"
      fi
      run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$remote && nohup python -m jfacediag.train \
$(quote "$@") --config.distributed=yes$dtype > ~/jfacediag/train.log 2>&1 &" ;;
    logs)
      run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="tail -n 40 ~/jfacediag/train.log" ;;
    delete)
      run "${tpu[@]}" delete "$name" "${where[@]}" --quiet ;;
    *) die "tpu: unknown action $action (create, setup, run, logs, delete)" ;;
  esac
}

# == main ==============================================================================================================
# --dry-run may stand anywhere before the `--` that starts the training flags.
args=() seen_dashes=0
for a in "$@"; do
  if [[ $seen_dashes == 0 && $a == --dry-run ]]; then DRY_RUN=1; continue; fi
  [[ $a == -- ]] && seen_dashes=1
  args+=("$a")
done
set -- "${args[@]+"${args[@]}"}"
target=${1:-}
[[ -n $target ]] || die "usage: ./launch.sh [--dry-run] local|gpu|slurm|tpu ... (see the top of launch.sh)"
shift
case $target in
  local) cmd_local "$@" ;;
  gpu) cmd_gpu "$@" ;;
  tpu) cmd_tpu "$@" ;;
  slurm) cmd_slurm "$@" ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' ;;
  *) die "unknown target $target: local, gpu, slurm or tpu" ;;
esac
