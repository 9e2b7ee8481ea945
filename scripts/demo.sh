#!/usr/bin/env bash
# End-to-end demo: replay the bundled sample camera bag into the running node over real DDS
# (with /clock for use_sim_time), ask the bag's questions through ~/query, print a table
# (question, answer, expected, correct, evidence stamps, latency) and the score.
#
#   scripts/demo.sh                          # memory.policy inf_mllm (default model, CPU)
#   scripts/demo.sh --policy streaming_llm   # same budget, sinks + recent only
#   scripts/demo.sh --offline                # no ROS: feed the engine directly at bag time
# Options: --policy P --budget N --rate R (replay speed) --frame-rate HZ --device D
#          --model M --offline --keep-log. Results: results/demo_<policy>.{json,md,png}.
set -euo pipefail
cd "$(dirname "$0")/.."

POLICY=inf_mllm
BUDGET=1024
RATE=2.0
FRAME_RATE=1.0
DEVICE=cpu
MODEL=default
OFFLINE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --policy) POLICY="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    --frame-rate) FRAME_RATE="$2"; shift 2 ;;
    --device) DEVICE="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --offline) OFFLINE=1; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

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

BAG=data/sample_bag
OUTDIR=results
mkdir -p "$OUTDIR" data
python -m ros2_infmllm.eval make-bag --if-missing --out "$BAG"

if [ "$OFFLINE" = 1 ]; then
  exec python -m ros2_infmllm.eval replay --offline --bag "$BAG" --policy "$POLICY" \
    --budget "$BUDGET" --frame-rate "$FRAME_RATE" --device "$DEVICE" --model "$MODEL" \
    --out "$OUTDIR/demo_${POLICY}_offline.json"
fi

# A private DDS domain so that the demo never talks to other ROS graphs on the network.
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( ( $$ % 100 ) + 100 ))}"
PARAMS="$OUTDIR/demo_params_${POLICY}.yaml"
cat > "$PARAMS" <<EOF
/**:
  ros__parameters:
    use_sim_time: true
    image_topics: ['/camera/image_raw']
    frame_rate: ${FRAME_RATE}
    model: '${MODEL}'
    device: '${DEVICE}'
    memory:
      policy: '${POLICY}'
      budget: ${BUDGET}
EOF

LOG="$OUTDIR/demo_node_${POLICY}.log"
if python -c 'import ros2_infmllm.launch' 2>/dev/null; then
  python -m ros2_infmllm.launch "params_file:=$PARAMS" >"$LOG" 2>&1 &
else
  python -m ros2_infmllm.node --ros-args --params-file "$PARAMS" >"$LOG" 2>&1 &
fi
NODE_PID=$!
cleanup() {
  if kill -0 "$NODE_PID" 2>/dev/null; then
    kill -INT "$NODE_PID" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 "$NODE_PID" 2>/dev/null || break
      sleep 0.5
    done
    kill -TERM "$NODE_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT
echo "node started (pid $NODE_PID, policy $POLICY, budget $BUDGET, log $LOG)"

set +e
python -m ros2_infmllm.eval replay --bag "$BAG" --rate "$RATE" --node /infmllm \
  --policy "$POLICY" --budget "$BUDGET" --frame-rate "$FRAME_RATE" --model "$MODEL" \
  --out "$OUTDIR/demo_${POLICY}.json"
RC=$?
set -e
if [ "$RC" != 0 ]; then
  echo "demo.sh: replay failed (exit $RC); last node log lines:" >&2
  tail -n 20 "$LOG" >&2 || true
fi
exit "$RC"
