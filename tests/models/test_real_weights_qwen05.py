"""The packaged Qwen2.5-Coder-0.5B (``model: qwen2.5-0.5b``) loads offline and answers from
the stream: a fact planted in a camera frame is recalled after distractor frames.

Skipped, with the reason, when setup has not joined the file; about a minute (the GGUF
is dequantised at load) where it has, as in CI.
"""
import pytest

from ros2_infmllm.models.base import ModelError
from ros2_infmllm.models.registry import weights_path

try:
    weights_path('qwen2.5-0.5b')
    MISSING = ''
except ModelError as exc:
    MISSING = str(exc)


@pytest.mark.skipif(bool(MISSING), reason=f'qwen2.5-0.5b not assembled: {MISSING}')
def test_qwen05_recalls_a_planted_frame_fact():
    from ros2_infmllm.engine import SessionConfig, build_session
    from ros2_infmllm.eval.scenario import SCENES, SceneRenderer
    session = build_session(SessionConfig(model='qwen2.5-0.5b', device='cpu',
                                          policy='inf_mllm', budget=1024, n_recent=256))
    d = session.status().model
    assert d['family'] == 'qwen2' and d['parameters'] > 4e8
    assert session.adapter.turn_open == '<|im_start|>{role}\n'   # the file's own template
    scene = SCENES['sample']
    render = SceneRenderer(scene, seed=scene.seed)
    for t in (60.0, 70.0, 81.0, 83.0, 90.0, 100.0, 105.0, 140.0, 150.0, 160.0):
        session.ingest_frame(render.render(t), 1_700_000_000.0 + t, '/camera/image_raw')
    answer = session.ask('Which ArUco marker id was next to the red box?', max_new_tokens=16)
    from ros2_infmllm.eval.scoring import match_answer
    assert match_answer(answer.text, 17, 'numeric', others=[7, 42, 4711]), answer.text
