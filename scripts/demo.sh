#!/usr/bin/env bash
# End-to-end demo: replay a camera bag into the running node over real DDS (with /clock for
# use_sim_time), once per memory policy, ask the bag's questions through ~/query, then
# replay the same bag offline with the full cache as the oracle, and print one
# side-by-side table (question, expected, each policy's answer and verdict, far/recent
# scores) with a PNG beside it (verdict per question against how far back its evidence lies).
#
#   scripts/demo.sh                          # inf_mllm and streaming_llm, then the oracle
#   scripts/demo.sh --policy streaming_llm   # one policy only
#   scripts/demo.sh --bag heldout            # the held-out bag (other scenes and timings)
#   scripts/demo.sh --bag real               # real footage and photographs (Debian imagery)
#   scripts/demo.sh --offline                # no ROS: feed the engine directly at bag time
#   scripts/demo.sh --smoke                  # CI: tiny-test model, short bag, 2 questions
# Options: --policy P --budget N --rate R (replay speed) --frame-rate HZ --device D
#          --model M --bag sample|heldout|yard|real --offline --no-oracle --smoke.
# Results: results/demo_<bag>_<policy>.{json,md,png}, results/demo_<bag>_side_by_side.*
set -euo pipefail
cd "$(dirname "$0")/.."

POLICIES="inf_mllm streaming_llm"
BUDGET=1024
RATE=2.0
FRAME_RATE=1.0
DEVICE=cpu
MODEL=default
OFFLINE=0
ORACLE=1
SMOKE=0
BAGNAME=sample
while [ $# -gt 0 ]; do
  case "$1" in
    --policy) POLICIES="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    --frame-rate) FRAME_RATE="$2"; shift 2 ;;
    --device) DEVICE="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --bag) BAGNAME="$2"; shift 2 ;;
    --offline) OFFLINE=1; shift ;;
    --no-oracle) ORACLE=0; shift ;;
    --smoke) SMOKE=1; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$BAGNAME" in
  sample|heldout|yard|real) ;;
  *) echo "demo.sh: --bag must be sample, heldout, yard or real, got $BAGNAME" >&2; exit 2 ;;
esac

if [ -f .venv/bin/activate ]; then
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
if [ -f install/setup.bash ]; then
  set +u
  # shellcheck disable=SC1091
  . install/setup.bash
  set -u
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

OUTDIR=${DEMO_OUTDIR:-results}
BAG=data/${BAGNAME}_bag
EXTRA=()
MAKE=(--scene "$BAGNAME")
if [ "$SMOKE" = 1 ]; then
  # CI: a random tiny model, the scene's first 180 s at 1 Hz, the first two questions
  MODEL=tiny-test BUDGET=256 RATE=20
  BAG=$OUTDIR/smoke_${BAGNAME}_bag
  MAKE+=(--duration 180 --rate 1 --no-second-camera)
  EXTRA=(--smoke --max-new-tokens 4)
fi
QUESTIONS=ros2_infmllm/eval/data/${BAGNAME}_questions.yaml   # questions.SCENE_QUESTIONS
mkdir -p "$OUTDIR" data
if [ "$BAGNAME" = real ]; then
  # real footage: the Debian imagery packages are found, or fetched as root with apt
  [ "$SMOKE" = 0 ] || { echo "demo.sh: --smoke has no real bag" >&2; exit 2; }
  python -m ros2_infmllm.eval.real_bag --if-missing --out "$BAG"
else
  python -m ros2_infmllm.eval make-bag --if-missing --out "$BAG" "${MAKE[@]}"
fi
TAG="$OUTDIR/demo_${BAGNAME}"

run_node() {  # run_node POLICY: the node over DDS, the bag replayed into it
  local policy=$1 params="$OUTDIR/demo_params_$1.yaml" log="$OUTDIR/demo_node_$1.log" rc
  cat > "$params" <<EOF
/**:
  ros__parameters:
    use_sim_time: true
    image_topics: ['/camera/image_raw']
    frame_rate: ${FRAME_RATE}
    model: '${MODEL}'
    device: '${DEVICE}'
    memory:
      policy: '${policy}'
      budget: ${BUDGET}
EOF
  if python -c 'import ros2_infmllm.ros.launch' 2>/dev/null; then
    python -m ros2_infmllm.ros.launch "params_file:=$params" >"$log" 2>&1 &
  else
    python -m ros2_infmllm.ros.node --ros-args --params-file "$params" >"$log" 2>&1 &
  fi
  NODE_PID=$!
  echo "node started (pid $NODE_PID, policy $policy, budget $BUDGET, log $log)"
  set +e
  python -m ros2_infmllm.eval replay --bag "$BAG" --questions "$QUESTIONS" --rate "$RATE" \
    --node /infmllm --policy "$policy" --budget "$BUDGET" --frame-rate "$FRAME_RATE" \
    --model "$MODEL" --out "${TAG}_${policy}.json" "${EXTRA[@]}"
  rc=$?
  set -e
  stop_node
  if [ "$rc" != 0 ]; then
    echo "demo.sh: replay failed (exit $rc); last node log lines:" >&2
    tail -n 20 "$log" >&2 || true
    exit "$rc"
  fi
}

NODE_PID=
stop_node() {
  if [ -n "$NODE_PID" ] && kill -0 "$NODE_PID" 2>/dev/null; then
    kill -INT "$NODE_PID" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 "$NODE_PID" 2>/dev/null || break
      sleep 0.5
    done
    kill -TERM "$NODE_PID" 2>/dev/null || true
  fi
  NODE_PID=
}
trap stop_node EXIT
# A private DDS domain so that the demo never talks to other ROS graphs on the network.
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( ( $$ % 100 ) + 100 ))}"
if [ "$BAGNAME" = real ]; then
  # 640x480 raw frames: the replay (the camera here) publishes through shared memory, else
  # most of them are lost in transport (docs/node.md, "Large frames")
  export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$PWD/config/fastdds_large_frames.xml}"
fi

offline() {  # offline POLICY FRAME_RATE OUT: the engine fed directly at bag time
  python -m ros2_infmllm.eval replay --offline --bag "$BAG" --questions "$QUESTIONS" \
    --policy "$1" --budget "$BUDGET" --frame-rate "$2" --device "$DEVICE" --model "$MODEL" \
    --no-progress --out "$3" "${EXTRA[@]}" >/dev/null
  echo "offline $1 at $2 frames/s: $3"
}

RUNS=()
start=$(date +%s)
for policy in $POLICIES; do
  if [ "$OFFLINE" = 1 ]; then
    offline "$policy" "$FRAME_RATE" "${TAG}_${policy}_offline.json"
    RUNS+=("${TAG}_${policy}_offline.json")
  else
    run_node "$policy"
    RUNS+=("${TAG}_${policy}.json")
  fi
done
ORACLE_ARGS=()
if [ "$ORACLE" = 1 ]; then
  # the oracle sees as many frames per second of bag time as the nodes were fed
  ORATE=$(python -m ros2_infmllm.eval.sidebyside --fed-rate "${RUNS[@]}" \
          --default-rate "$FRAME_RATE")
  offline full "$ORATE" "${TAG}_full_offline.json"
  ORACLE_ARGS=(--oracle "${TAG}_full_offline.json")
fi
python -m ros2_infmllm.eval.sidebyside "${RUNS[@]}" "${ORACLE_ARGS[@]}" \
  --out "${TAG}_side_by_side.json"
echo "demo took $(( $(date +%s) - start )) s (both policies and the oracle, model loads included)"
