#!/usr/bin/env bash
# Launch pretraining or an evaluation with the accelerate arguments this machine,
# cluster or SLURM job needs.
#
#   ./launch.sh [pretrain|knn|linear] [--dry-run] key=value...
#
# Environment it reads (all optional):
#   CUDA_VISIBLE_DEVICES  GPUs to use ("" = none); else SLURM_GPUS_ON_NODE /
#                         SLURM_GPUS_PER_NODE, else `nvidia-smi -L`
#   NUM_GPUS=N            GPU count override (tests, odd drivers)
#   NPROC=N               processes per node on a machine without GPUs (gloo)
#   NNODES NODE_RANK MASTER_ADDR MASTER_PORT   several machines, one launch each
#   SLURM_*               under SLURM (run it once per node with srun) the above
#                         are filled in from the job unless set explicitly
#   MIXED_PRECISION       passed to accelerate; train.precision is what training uses
set -euo pipefail

die() { echo "error: $*" >&2; exit 2; }

# A positive (or, with allow_zero, non-negative) decimal integer, else exit 2.
check_int() { # name value [allow_zero]
    [[ $2 =~ ^[0-9]+$ ]] || die "$1 must be a whole number, got '$2'"
    (( 10#$2 > 0 )) || [[ ${3:-} == allow_zero ]] || die "$1 must be at least 1, got '$2'"
}

# --- arguments: [subcommand] and --dry-run in any order, then pass-through ---
subcommand="" dry_run=0
while (( $# )); do
    case $1 in
        --dry-run) dry_run=1; shift ;;
        -h|--help) sed -n '2,16s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
        --) shift; break ;;
        # Refuse unknown options: a mistyped --dry-run must not start a real run.
        -*) die "unknown option '$1' (launch.sh takes --dry-run, then key=value arguments)" ;;
        *=*) break ;;
        *)
            [[ -z $subcommand ]] || break   # a bare word after the subcommand is the script's
            case $1 in
                pretrain|knn|linear) subcommand=$1; shift ;;
                *) die "unknown subcommand '$1' (pretrain | knn | linear)" ;;
            esac ;;
    esac
done
case ${subcommand:-pretrain} in
    pretrain) script=ssl_bf/pretrain.py ;;
    knn) script=eval/knn.py ;;
    linear) script=eval/linear.py ;;
esac
# Relative to this file, so it works from any directory while relative paths in the
# key=value arguments (data.root=...) keep meaning the caller's directory.
script="$(dirname -- "${BASH_SOURCE[0]}")/$script"

# --- GPUs on this node ---
count_gpus() {
    if [[ -n ${NUM_GPUS:-} ]]; then
        check_int NUM_GPUS "$NUM_GPUS" allow_zero; echo $(( 10#$NUM_GPUS ))
    elif [[ -n ${CUDA_VISIBLE_DEVICES+set} ]]; then
        # CUDA counts the ids up to the first invalid one ("-1", SLURM's "NoDevFiles").
        local ids n=0 id
        IFS=, read -ra ids <<< "$CUDA_VISIBLE_DEVICES"
        for id in "${ids[@]}"; do
            [[ -n $id && $id != -* && $id != NoDevFiles ]] || break
            n=$(( n + 1 ))
        done
        echo "$n"
    elif [[ -n ${SLURM_JOB_ID:-} && -n ${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-}} ]]; then
        local g=${SLURM_GPUS_ON_NODE:-$SLURM_GPUS_PER_NODE}
        g=${g##*:}   # --gpus-per-node may be written type:count
        check_int SLURM_GPUS_PER_NODE "$g" allow_zero; echo $(( 10#$g ))
    elif command -v nvidia-smi > /dev/null; then
        # One "GPU i: ..." line per device; MIG instances are indented lines.
        local line n=0
        while IFS= read -r line; do
            [[ $line == "GPU "* ]] && n=$(( n + 1 ))
        done < <(nvidia-smi -L 2> /dev/null || true)
        echo "$n"
    else
        echo 0
    fi
}

# First host of a SLURM node list: scontrol knows every form; without it, the
# common ones: "a,b", "node[01-04]", "gpu[03,07]", "n[1-2]-ib,x" (also if scontrol fails).
first_host() {
    local hosts=""
    if command -v scontrol > /dev/null; then
        hosts=$(scontrol show hostnames "$1" 2> /dev/null) || hosts=""
    fi
    if [[ -n $hosts ]]; then
        echo "${hosts%%$'\n'*}"
    elif [[ ${1%%,*} == *"["* ]]; then
        local prefix=${1%%\[*} inside=${1#*\[}
        local after=${inside#*\]}
        echo "${prefix}${inside%%[],-]*}${after%%,*}"
    else
        echo "${1%%,*}"
    fi
}

if [[ -n ${SLURM_JOB_ID:-} ]]; then
    # One launch per node (srun --ntasks-per-node=1); explicit variables still win.
    NNODES=${NNODES:-${SLURM_NNODES:-1}}
    NODE_RANK=${NODE_RANK:-${SLURM_NODEID:-0}}
    if [[ -z ${MASTER_ADDR:-} && -n ${SLURM_JOB_NODELIST:-} ]]; then
        MASTER_ADDR=$(first_host "$SLURM_JOB_NODELIST")
    fi
fi
nnodes=${NNODES:-1}
check_int NNODES "$nnodes"
nnodes=$(( 10#$nnodes ))

gpus=$(count_gpus)
envs=()   # variables set for the launch, printed in front of the command
args=()
if (( gpus > 0 )); then
    [[ -z ${NPROC:-} ]] || die "NPROC is for machines without GPUs; choose GPUs with CUDA_VISIBLE_DEVICES"
    per_node=$gpus
    # Precision comes from train.precision (the script passes it to Accelerator,
    # which overrides the launcher's value), so only forward an explicit request.
    [[ -z ${MIXED_PRECISION:-} ]] || args+=(--mixed_precision "$MIXED_PRECISION")
else
    per_node=${NPROC:-1}
    check_int NPROC "$per_node"
    per_node=$(( 10#$per_node ))
    # accelerate (and torchrun) would give each process OMP_NUM_THREADS=1; share the
    # cores instead. nproc honours CPU affinity (cgroups, taskset, SLURM) but also
    # OMP_NUM_THREADS, hence env -u.
    cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
    threads=$(( cores / per_node ))
    envs+=("OMP_NUM_THREADS=$(( threads > 0 ? threads : 1 ))")
    args+=(--mixed_precision "${MIXED_PRECISION:-no}")
fi

total=$(( per_node * nnodes ))
# --quiet: no launcher traceback after a script's `error:` line (the status file below
# keeps that line last and its exit status).
launch=(accelerate launch --quiet)
# --multi_gpu is accelerate's DDP launcher (torchrun): the only one that starts several
# processes, also on CPU, where it uses gloo (--cpu --num_processes 2 starts ONE).
if (( total > 1 )); then launch+=(--multi_gpu); fi
# num_processes is the TOTAL over all machines; accelerate starts total/num_machines here.
launch+=(--num_processes "$total" --num_machines "$nnodes")
if (( nnodes > 1 )); then
    [[ -n ${NODE_RANK:-} ]] || die "NNODES=$nnodes needs NODE_RANK (0 on the main node)"
    [[ -n ${MASTER_ADDR:-} ]] || die "NNODES=$nnodes needs MASTER_ADDR (the main node's address)"
    check_int NODE_RANK "$NODE_RANK" allow_zero
    (( 10#$NODE_RANK < nnodes )) || die "NODE_RANK must be below NNODES=$nnodes, got '$NODE_RANK'"
    launch+=(--machine_rank "$(( 10#$NODE_RANK ))" --main_process_ip "$MASTER_ADDR"
             --main_process_port "${MASTER_PORT:-29500}")
elif [[ -n ${MASTER_PORT:-} ]]; then
    launch+=(--main_process_port "$MASTER_PORT")   # e.g. two jobs on one machine
fi
# Stated so accelerate has no defaults to warn about; compiling is the config's choice.
launch+=("${args[@]}" --dynamo_backend no "$script" "$@")

if (( dry_run )); then
    line=$(printf '%q ' "${envs[@]}" "${launch[@]}")   # quoted so it can be pasted
    echo "${line% }"
    exit 0
fi
(( ${#envs[@]} == 0 )) || export "${envs[@]}"
# The scripts write "STATUS error: ..." here when they stop on an error (ssl_bf/errors.py):
# accelerate turns every failure into status 1 and may print after the line, so it is said
# again last, with the script's own status (2: bad input, 1: the run failed).
status_file=$(mktemp "${TMPDIR:-/tmp}/ssl_bf_status.XXXXXX")
trap 'rm -f "$status_file"' EXIT
export SSL_BF_STATUS_FILE=$status_file
# The launch runs in a process group of its own (set -m), so a terminal's Ctrl-C reaches this
# script alone; a signal it gets (Ctrl-C, a scheduler's SIGTERM) is passed on once to the
# training processes - accelerate's children - which finish the step, checkpoint and exit
# (accelerate itself would kill them 5 s after a SIGTERM).
set -m
"${launch[@]}" &
child=$!
set +m
forward() { pkill -"$1" -P "$child" 2> /dev/null || kill -s "$1" "$child" 2> /dev/null || true; }
trap 'forward TERM' TERM
trap 'forward INT' INT
set +e
while true; do
    wait "$child"
    rc=$?
    kill -0 "$child" 2> /dev/null || break   # else the wait was cut short by a signal
done
set -e
if (( rc != 0 )) && [[ -s $status_file ]]; then
    read -r rc message < "$status_file"
    echo "$message" >&2
fi
exit "$rc"
