"""``python -m ros2_infmllm.eval.bench <what> ...`` (same as ``infmllm-eval bench``)."""
import sys

from ros2_infmllm.eval.bench import main

sys.exit(main(sys.argv[1:]))
