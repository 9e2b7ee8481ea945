"""Rosbag replay evaluation: camera frames from a rosbag2 bag, questions at bag times.

Two ways to run, same questions and scoring:

* DDS (default): publishes the bag's camera topics and ``/clock`` (for ``use_sim_time``)
  into a running node over real DDS, at ``rate`` x real time, and asks every question
  through the node's ``~/query`` service when the bag reaches its time (asynchronously:
  the stream keeps flowing while the node answers, as on a robot).
* ``--offline``: feeds the engine (``engine.build_session``) directly at bag time, one
  frame per camera every ``1 / frame_rate`` s of bag time, and asks each question when
  the bag reaches it. No ROS needed; as fast as the model allows.

Scores: answer correctness (the question's match kind), evidence precision (fraction of
returned frame stamps inside the expected time ranges), latency p50/p95, frames fed and
dropped, cache tokens at the end.

The memory view (``ros2_infmllm/engine/memory_view.py``, the picture the node publishes on
``~/memory_view``) is saved after every question: ``memory_timeline_q<N>.png`` for the N-th
question asked and ``memory_timeline.png`` for the last, in ``<out>_memory/`` beside the
result JSON. Offline it is drawn from the session; over DDS it is the node's first
``~/memory_view`` image after the answer (the node needs ``memory_view_rate > 0``).
"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ros2_infmllm.eval.bagio import bag_start, camera_topics, decode_image, iter_frames
from ros2_infmllm.eval.common import save_figure
from ros2_infmllm.eval.questions import Question, load_questions, sample_questions_path
from ros2_infmllm.eval.scoring import evidence_precision, percentile

SESSION_FIELDS_FROM_ARGS = ('model', 'device', 'dtype', 'policy', 'budget')


def pick_topics(bag: Path, questions: Sequence[Question],
                topics: Optional[Sequence[str]] = None) -> list:
    """Topics to feed: the given ones, else the questions' cameras, else every camera topic."""
    have = camera_topics(bag)
    if not have:
        raise ValueError(f'{bag} has no sensor_msgs Image/CompressedImage topics')
    if topics:
        want = list(topics)
    else:
        want = sorted({q.camera for q in questions if q.camera}) or sorted(have)
    missing = [t for t in want if t not in have]
    if missing:
        raise ValueError(f'topics {missing} not in {bag}; it has {sorted(have)}')
    return want


def _record(q: Question, answer: str, stamps_rel: list, latency: float, extra: dict) -> dict:
    rec = {'id': q.id, 't': q.t, 'question': q.question, 'expected': q.expected,
           'match': q.match, 'tags': q.tags, 'answer': answer,
           'correct': bool(q.score(answer)), 'evidence': [round(s, 3) for s in stamps_rel],
           'expected_evidence': q.evidence,
           'evidence_precision': evidence_precision(stamps_rel, q.evidence),
           'latency_s': round(float(latency), 4)}
    rec.update(extra)
    return rec


# ---- offline: the engine at bag time ---------------------------------------------------------
def session_config(args, overrides: Optional[dict] = None):
    """Build the engine's SessionConfig from CLI arguments and ``key=value`` overrides.

    The policy is the one every eval task runs (``eval.common.build_policy``: the policy's
    own defaults, ``n_recent`` at most ``budget // 4``); overrides that are policy knobs go
    to it, the other SessionConfig fields (``multi_round``, ``max_chunk`` ...) to the session.
    """
    from ros2_infmllm.engine import POLICY_KNOBS, SessionConfig
    from ros2_infmllm.eval.common import build_policy, session_config_for
    names = {f.name for f in dataclasses.fields(SessionConfig)}
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f'unknown session parameter(s) {unknown}; valid: {sorted(names)}')
    kw = {k: getattr(args, k) for k in SESSION_FIELDS_FROM_ARGS if k in names}
    kw.update({k: v for k, v in overrides.items() if k not in POLICY_KNOBS})
    knobs = {k: v for k, v in overrides.items() if k in POLICY_KNOBS}
    budget = knobs.pop('budget', kw.pop('budget', None))
    policy = build_policy(kw.pop('policy'), budget, knobs)
    return session_config_for(policy, **kw)


def _status(session) -> tuple:
    """``(SessionStatus or None, why not)``: a failing status is reported, not fatal here."""
    try:
        return session.status(), ''
    except Exception as exc:        # noqa: BLE001 - reported, not fatal for the eval
        return None, str(exc)


def _cache_tokens(session) -> Optional[int]:
    """Cache tokens of the session now (None if it cannot say)."""
    status, _ = _status(session)
    return status.cache_tokens if status is not None else None


def timeline_dir(out_json: Path | str) -> Path:
    """Folder of a replay's memory pictures: ``results/replay.json`` -> ``results/replay_memory``.

    One folder per result file, so runs written side by side (the demo's two policies)
    keep their own ``memory_timeline.png``.
    """
    out_json = Path(out_json)
    return out_json.with_name(out_json.stem + '_memory')


def save_memory_timeline(session, folder: Path, n: int, q: Question) -> Optional[str]:
    """Draw the memory view of ``session`` after question ``n``; return the file name.

    Writes ``memory_timeline_q<n>.png`` and the same picture as ``memory_timeline.png``
    (the latest question's). A session without ``memory_map`` saves nothing (None).
    """
    if not hasattr(session, 'memory_map'):
        return None
    from ros2_infmllm.engine.memory_view import render
    view = session.memory_map()
    title = (f"after q{n} {q.id} (bag {q.t:.1f} s): {view.get('policy', '')} memory, "
             f"{len(view.get('tokens', []))} of {view.get('budget') or 'unbounded'} tokens "
             f"kept, {len(view.get('frames', {}))} frames held")
    return _write_timeline(render(view, title=title), folder, n)


def _write_timeline(rgb: np.ndarray, folder: Path, n: int) -> str:
    """Write ``rgb`` as ``memory_timeline_q<n>.png`` and ``memory_timeline.png``."""
    import cv2
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    folder.mkdir(parents=True, exist_ok=True)
    name = f'memory_timeline_q{n}.png'
    for file in (name, 'memory_timeline.png'):
        if not cv2.imwrite(str(folder / file), bgr):
            raise OSError(f'could not write {folder / file}')
    return name


def _position_path(snapshot: str) -> str:
    """Return the file beside a replay's memory snapshot that says where the replay was."""
    return f'{snapshot}.replay.json'


def _save_position(snapshot: str, position: dict) -> None:
    with open(_position_path(snapshot), 'w') as f:
        json.dump(position, f)


def _load_position(snapshot: str) -> dict:
    with open(_position_path(snapshot)) as f:
        return json.load(f)


def run_offline(session, bag: Path, questions: Sequence[Question], topics: Sequence[str],
                frame_rate: float, max_new_tokens: int = 24, progress: bool = True,
                timeline: Optional[Path] = None, save_memory: Optional[tuple] = None,
                restore_memory: Optional[str] = None) -> dict:
    """Replay ``bag`` into ``session`` at bag time; return records and stream statistics.

    With ``timeline`` (a folder) the memory view is saved there after every question
    (:func:`save_memory_timeline`); each record names its picture. ``save_memory``
    ``(path, t)``: the memory is saved through the engine's persistence when the bag
    reaches ``t`` s (before that frame is handled), with the replay's position beside it
    (``path.replay.json``). ``restore_memory`` (such a path): the memory is restored and
    the replay resumes at that position, as a restarted robot would.
    """
    from tqdm import tqdm

    from ros2_infmllm.engine.persistence import Persistence
    if frame_rate <= 0:
        raise ValueError(f'frame_rate must be > 0, got {frame_rate}')
    start = bag_start(bag)
    period = 1.0 / frame_rate
    pending = sorted(questions, key=lambda q: q.t)
    last_fed: dict = {}
    stats = {'frames_in_bag': 0, 'frames_fed': 0, 'frames_dropped': 0, 'drop_reasons': {},
             'ingest_s': []}
    records = []
    offset = None
    resume_at = None
    if restore_memory:
        store = Persistence(restore_memory, period=0.0)
        if not store.restore(session):
            raise RuntimeError(f'memory not restored from {restore_memory}: '
                               f'{store.status().restore_error or "no such file"}')
        position = _load_position(restore_memory)
        resume_at, offset = float(position['t']), position['offset']
        last_fed = {k: float(v) for k, v in position['last_fed'].items()}
        asked = set(position['asked'])
        pending = [q for q in pending if q.id not in asked]
        stats['restored_at_s'] = resume_at
    bar = tqdm(desc='replay (offline)', unit='frame', disable=not progress, mininterval=2.0)

    def ask(q: Question) -> None:
        t0 = time.perf_counter()
        ans = session.ask(q.question, camera=None, max_new_tokens=max_new_tokens)
        wall = time.perf_counter() - t0
        off = offset or 0.0
        rel = [float(s) - off for s in (getattr(ans, 'evidence_stamps', None) or [])]
        timings = dict(getattr(ans, 'timings', {}) or {})
        extra = {'timings': timings, 'cache_tokens': _cache_tokens(session)}
        if getattr(ans, 'memory_log', ''):
            extra['memory_log'] = ans.memory_log
        if timeline is not None:
            picture = save_memory_timeline(session, timeline, len(records) + 1, q)
            if picture is not None:
                extra['memory_timeline'] = f'{timeline.name}/{picture}'
        records.append(_record(q, str(ans.text), rel, wall, extra))

    for fr in iter_frames(bag, topics):
        t_rel = fr.t_bag - start
        if resume_at is not None and t_rel < resume_at:
            continue                             # before the restored position
        if offset is None:
            offset = fr.stamp - t_rel           # header stamp -> seconds from bag start
        if save_memory is not None and t_rel >= save_memory[1]:
            ok, message = Persistence(save_memory[0], period=0.0).save(session, 'replay')
            if not ok:
                raise RuntimeError(message)
            _save_position(save_memory[0], {
                't': t_rel, 'offset': offset, 'last_fed': last_fed,
                'asked': [q.id for q in questions if q not in pending]})
            stats['saved_at_s'] = t_rel
            save_memory = None
        while pending and pending[0].t <= t_rel:
            ask(pending.pop(0))
        if not pending:
            break                                # nothing is asked after this frame
        stats['frames_in_bag'] += 1
        bar.update(1)
        prev = last_fed.get(fr.topic)
        if prev is not None and t_rel - prev < period - 1e-6:
            continue
        last_fed[fr.topic] = t_rel
        try:
            rgb = decode_image(fr.msgtype, fr.msg)
            t0 = time.perf_counter()
            res = session.ingest_frame(rgb, fr.stamp, fr.topic)
            stats['ingest_s'].append(time.perf_counter() - t0)
        except (ValueError, RuntimeError) as exc:
            reason = type(exc).__name__
            stats['frames_dropped'] += 1
            stats['drop_reasons'][reason] = stats['drop_reasons'].get(reason, 0) + 1
            continue
        if res is not None and getattr(res, 'accepted', True) is False:
            stats['frames_dropped'] += 1
            reason = str(getattr(res, 'reason', 'rejected'))
            stats['drop_reasons'][reason] = stats['drop_reasons'].get(reason, 0) + 1
            continue
        stats['frames_fed'] += 1
    bar.close()
    for q in pending:
        ask(q)
    ing = stats.pop('ingest_s')
    stats['ingest_p50_s'] = percentile(ing, 50)
    stats['ingest_p95_s'] = percentile(ing, 95)
    status, error = _status(session)
    stats['cache_tokens_end'] = status.cache_tokens if status is not None else None
    stats['describe'] = status.to_dict() if status is not None else {'error': error}
    return {'records': records, 'stats': stats}


# ---- DDS: a running node -----------------------------------------------------------------------
def _stamp_s(t) -> float:
    return float(t.sec) + float(t.nanosec) * 1e-9


def _image_rgb(msg) -> Optional[np.ndarray]:
    """Return an rgb8 ``sensor_msgs/Image`` (the memory view) as HxWx3, else None."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(bytes(msg.data), np.uint8)
    if msg.encoding != 'rgb8' or h < 1 or w < 1 or step < 3 * w or data.size < h * step:
        return None
    return data[:h * step].reshape(h, step)[:, :3 * w].reshape(h, w, 3)


def run_dds(bag: Path, questions: Sequence[Question], topics: Sequence[str], *,
            node_name: str = '/infmllm', rate: float = 1.0, timeout: float = 60.0,
            max_new_tokens: int = 24, wait_service_s: float = 180.0,
            progress: bool = True, timeline: Optional[Path] = None) -> dict:
    """Publish ``bag`` and /clock over DDS, ask questions through ``<node>/query``.

    With ``timeline`` (a folder), the first ``<node>/memory_view`` image that arrives after
    each answer is saved there (see :func:`save_memory_timeline`).
    """
    if rate <= 0:
        raise ValueError(f'rate must be > 0, got {rate}')
    try:
        import rclpy
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rclpy.serialization import deserialize_message
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CompressedImage, Image
    except ImportError as exc:
        raise RuntimeError(f'DDS replay needs rclpy and the ROS message packages ({exc}); '
                           'run ./setup.sh, or use --offline') from exc
    try:
        from ros2_infmllm_msgs.srv import Query
    except ImportError as exc:
        raise RuntimeError('DDS replay needs ros2_infmllm_msgs (build msg/ with ./setup.sh, '
                           'then `source install/setup.bash`), or use --offline') from exc
    from tqdm import tqdm
    from builtin_interfaces.msg import Time as TimeMsg

    types = camera_topics(bag)
    start = bag_start(bag)
    own_init = not rclpy.ok()
    if own_init:
        rclpy.init()
    node = rclpy.create_node('infmllm_replay')
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    clock_pub = node.create_publisher(Clock, '/clock', 10)
    pubs = {t: node.create_publisher(
        CompressedImage if types[t].endswith('CompressedImage') else Image, t, qos)
        for t in topics}
    msg_cls = {t: CompressedImage if types[t].endswith('CompressedImage') else Image
               for t in topics}
    diag = {}

    try:
        from diagnostic_msgs.msg import DiagnosticArray

        def on_diag(msg) -> None:
            for st in msg.status:
                for kv in st.values:
                    diag[kv.key] = kv.value
        node.create_subscription(DiagnosticArray, '/diagnostics', on_diag, 10)
    except ImportError:
        pass
    # the memory view after each answer: answered questions wait for the next picture
    view_lock = threading.Lock()
    view_waiting: list = []             # (question number, monotonic time answered)
    views: dict = {}                    # question number -> Image message

    def on_view(msg) -> None:
        now = time.monotonic()
        with view_lock:
            for item in [w for w in view_waiting if w[1] < now]:
                views[item[0]] = msg
                view_waiting.remove(item)

    def answered(n: int):
        def done(_fut) -> None:
            with view_lock:
                view_waiting.append((n, time.monotonic()))
        return done

    if timeline is not None:
        node.create_subscription(Image, node_name.rstrip('/') + '/memory_view', on_view, 1)
    srv = node_name.rstrip('/') + '/query'
    client = node.create_client(Query, srv)
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    records, inflight = [], []
    stats = {'frames_in_bag': 0, 'frames_published': 0}
    try:
        if not client.wait_for_service(timeout_sec=wait_service_s):
            raise RuntimeError(f'service {srv} not available after {wait_service_s:.0f} s: '
                               'is the node running (and active)?')
        t_wait = time.monotonic()       # a lifecycle node subscribes once active (model loaded)
        while any(p.get_subscription_count() == 0 for p in pubs.values()):
            if time.monotonic() - t_wait > wait_service_s:
                raise RuntimeError(f'no subscriber on {list(pubs)} after {wait_service_s:.0f} '
                                   's; is the node active, and are these its image_topics?')
            time.sleep(0.1)
        pending = sorted(questions, key=lambda q: q.t)
        offset = None
        wall0 = time.monotonic()
        bar = tqdm(desc=f'replay (DDS x{rate:g})', unit='frame', disable=not progress,
                   mininterval=2.0)

        def publish_clock(t_abs: float) -> None:
            ns = int(round(t_abs * 1e9))
            clock_pub.publish(Clock(clock=TimeMsg(sec=ns // 1_000_000_000,
                                                  nanosec=ns % 1_000_000_000)))

        def send(q: Question) -> None:
            req = Query.Request(question=q.question, camera=q.camera or '',
                                max_new_tokens=max_new_tokens)
            fut = client.call_async(req)
            fut.add_done_callback(answered(len(inflight) + 1))
            inflight.append((q, time.monotonic(), fut))

        for fr in iter_frames(bag, topics):
            t_rel = fr.t_bag - start
            if offset is None:
                offset = fr.stamp - t_rel
            due = wall0 + t_rel / rate
            while True:                              # keep /clock moving while waiting
                now = time.monotonic()
                publish_clock(start + min(t_rel, (now - wall0) * rate))
                if now >= due:
                    break
                time.sleep(min(0.02, due - now))
            while pending and pending[0].t <= t_rel:
                send(pending.pop(0))
            publish_clock(fr.t_bag)
            pubs[fr.topic].publish(deserialize_message(fr.rawdata, msg_cls[fr.topic]))
            stats['frames_in_bag'] += 1
            stats['frames_published'] += 1
            bar.update(1)
        bar.close()
        for q in pending:
            send(q)
        for q, t0, fut in inflight:
            left = timeout - (time.monotonic() - t0)
            end = time.monotonic() + max(0.0, left)
            while not fut.done() and time.monotonic() < end:
                time.sleep(0.02)
            wall = time.monotonic() - t0
            if not fut.done():
                records.append(_record(q, '', [], wall, {'error': f'timeout after {timeout} s'}))
                continue
            res = fut.result()
            rel = [_stamp_s(s) - (offset or 0.0) for s in res.evidence_stamps]
            extra = {'round_trip_s': round(wall, 4)}
            if not res.success:
                extra['error'] = res.message
            records.append(_record(q, res.answer if res.success else '', rel,
                                   float(res.latency_s) if res.success else wall, extra))
        time.sleep(1.2)                               # one more /diagnostics period
        if timeline is not None:
            for n, rec in enumerate(records, start=1):
                rgb = _image_rgb(views[n]) if n in views else None
                if rgb is not None:
                    rec['memory_timeline'] = f'{timeline.name}/{_write_timeline(rgb, timeline, n)}'
            stats['memory_views'] = len(views)
            if not views:
                stats['memory_timeline'] = (f'no {node_name.rstrip("/")}/memory_view image '
                                            'arrived: run the node with memory_view_rate > 0')
    finally:
        executor.shutdown(timeout_sec=1.0)
        spin.join(timeout=5.0)
        node.destroy_node()
        if own_init and rclpy.ok():
            rclpy.shutdown()
    stats['diagnostics'] = dict(diag)
    stats['frames_fed'] = _diag_int(diag, ('frames_fed',))
    stats['frames_dropped'] = _diag_int(diag, ('frames_dropped',)) if 'frames_dropped' in diag \
        else _diag_int(diag, ('drop',))
    stats['cache_tokens_end'] = _diag_int(diag, ('cache_tokens', 'cache tokens'))
    return {'records': records, 'stats': stats}


def _diag_int(diag: dict, needles: Sequence[str]) -> Optional[int]:
    for n in needles:                         # an exact key wins over a sum of matches
        if n in diag:
            try:
                return int(float(diag[n]))
            except ValueError:
                break
    total, found = 0, False
    for k, v in diag.items():
        if any(n in k.lower() for n in needles):
            try:
                total += int(float(v))
                found = True
            except ValueError:
                continue
    return total if found else None


# ---- summary and entry point -----------------------------------------------------------------
def summarise(records: list) -> dict:
    """Accuracy (overall and per tag), evidence precision and latency percentiles."""
    tags = sorted({t for r in records for t in r['tags']})
    prec = [r['evidence_precision'] for r in records if r['evidence_precision'] is not None]
    lat = [r['latency_s'] for r in records if 'error' not in r]
    return {'questions': len(records),
            'accuracy': float(np.mean([r['correct'] for r in records])) if records else None,
            'accuracy_by_tag': {t: float(np.mean([r['correct'] for r in records
                                                  if t in r['tags']])) for t in tags},
            'evidence_precision': float(np.mean(prec)) if prec else None,
            'latency_p50_s': percentile(lat, 50), 'latency_p95_s': percentile(lat, 95),
            'errors': sum(1 for r in records if 'error' in r)}


def run_from_args(args) -> dict:
    """Run the replay task from parsed CLI arguments (see ``infmllm-eval replay -h``)."""
    from ros2_infmllm.eval.common import parse_kv, run_metadata
    bag = Path(args.bag)
    if not bag.exists():
        raise FileNotFoundError(f'bag not found: {bag} (make the sample bag with '
                                '`infmllm-eval make-bag`)')
    qpath = Path(args.questions) if args.questions else sample_questions_path()
    questions = load_questions(qpath)
    if args.smoke:
        questions = questions[:2]
    topics = pick_topics(bag, questions, args.topics)
    overrides = parse_kv(args.param)
    if args.offline:
        from ros2_infmllm.engine import build_session
        cfg = session_config(args, overrides)
        session = build_session(cfg)
        save = getattr(args, 'save_memory', None)
        out = run_offline(session, bag, questions, topics, args.frame_rate,
                          max_new_tokens=args.max_new_tokens, progress=not args.no_progress,
                          timeline=timeline_dir(args.out),
                          save_memory=(save, args.save_at) if save else None,
                          restore_memory=getattr(args, 'restore_memory', None))
        config = dataclasses.asdict(cfg)
    else:
        out = run_dds(bag, questions, topics, node_name=args.node, rate=args.rate,
                      timeout=args.timeout, max_new_tokens=args.max_new_tokens,
                      progress=not args.no_progress, timeline=timeline_dir(args.out))
        config = {'node': args.node, 'rate': args.rate, 'policy': args.policy,
                  'budget': args.budget, 'model': args.model,
                  'note': 'policy/budget/model as set on the node by the caller'}
    result = {'mode': 'offline' if args.offline else 'dds', 'bag': str(bag),
              'questions_file': args.questions or 'ros2_infmllm/eval/data/sample_questions.yaml',
              'topics': topics, 'config': config,
              'frame_rate': args.frame_rate, 'summary': summarise(out['records']),
              'stats': out['stats'], 'records': out['records']}
    result['meta'] = run_metadata('replay', args.seed, args.model, config.get('device', '?')
                                  if isinstance(config.get('device'), str) else 'cpu',
                                  argv=getattr(args, 'command_argv', None),
                                  smoke=args.smoke, policy=config.get('policy'),
                                  budget=config.get('budget'))
    return result


def table(result: dict) -> str:
    """Plain-text table: question, answer, expected, correct, evidence, latency; then totals."""
    rows = [('id', 'question', 'answer', 'expected', 'ok', 'evidence (s)', 'latency')]
    for r in result['records']:
        ev = ','.join(f'{s:.1f}' for s in r['evidence'][:3])
        rows.append((r['id'], _cut(r['question'], 38), _cut(r['answer'] or r.get('error', ''),
                     34), _cut(str(r['expected']), 12), 'yes' if r['correct'] else 'no', ev,
                     f"{r['latency_s']:.2f}s"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ['  '.join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, '  '.join('-' * w for w in widths))
    s = result['summary']
    st = result['stats']
    lines.append('')
    lines.append(_summary_line(s, st, result))
    return '\n'.join(lines)


def _summary_line(s: dict, st: dict, result: dict) -> str:
    acc = '-' if s['accuracy'] is None else f"{100 * s['accuracy']:.0f}%"
    tags = ', '.join(f'{t} {100 * a:.0f}%' for t, a in s['accuracy_by_tag'].items())
    ep = '-' if s['evidence_precision'] is None else f"{s['evidence_precision']:.2f}"
    p50 = '-' if s['latency_p50_s'] is None else f"{s['latency_p50_s']:.2f}"
    p95 = '-' if s['latency_p95_s'] is None else f"{s['latency_p95_s']:.2f}"
    fed = st.get('frames_fed')
    return (f"score {sum(r['correct'] for r in result['records'])}/{s['questions']} ({acc}; "
            f"{tags}), evidence precision {ep}, latency p50 {p50} s p95 {p95} s, frames in "
            f"bag {st.get('frames_in_bag')}, fed {fed}, dropped {st.get('frames_dropped')}, "
            f"cache tokens at end {st.get('cache_tokens_end')}")


def _cut(text: str, n: int) -> str:
    text = ' '.join(str(text).split())
    return text if len(text) <= n else text[:n - 1] + '~'


def plot(result: dict, png: Path | str) -> Path:
    """Per-question latency bars coloured by correctness."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    recs = result['records']
    fig, ax = plt.subplots(figsize=(7.0, 3.4))
    ax.bar(range(len(recs)), [r['latency_s'] for r in recs],
           color=['tab:green' if r['correct'] else 'tab:red' for r in recs])
    ax.set_xticks(range(len(recs)))
    ax.set_xticklabels([r['id'] for r in recs], rotation=60, ha='right', fontsize=7)
    ax.set_ylabel('answer latency (s)')
    cfg = result.get('config', {})
    ax.set_title(f"Replay ({result['mode']}), policy {cfg.get('policy')}, budget "
                 f"{cfg.get('budget', '-')}: green = correct", fontsize=9)
    return save_figure(fig, png)


def markdown(result: dict, png_name: Optional[str] = None) -> str:
    """Markdown table of the replay (one row per question) plus the summary line."""
    cfg = result.get('config', {})
    lines = [f"Bag `{Path(result['bag']).name}`, mode {result['mode']}, policy "
             f"{cfg.get('policy')}, budget {cfg.get('budget', '-')}, model "
             f"`{cfg.get('model', result.get('meta', {}).get('model'))}`.", '',
             '| id | question | answer | expected | correct | evidence (s) | latency (s) |',
             '|---|---|---|---|---|---|---:|']
    for r in result['records']:
        ev = ', '.join(f'{s:.1f}' for s in r['evidence'][:3])
        ans = _cut(r['answer'] or r.get('error', ''), 60).replace('|', '/')
        lines.append(f"| {r['id']} | {r['question']} | {ans} | {r['expected']} | "
                     f"{'yes' if r['correct'] else 'no'} | {ev} | {r['latency_s']:.2f} |")
    lines += ['', _summary_line(result['summary'], result['stats'], result)]
    if png_name:
        lines += ['', f'![replay latency]({png_name})']
    pictures = [r['memory_timeline'] for r in result['records'] if r.get('memory_timeline')]
    if pictures:
        folder = pictures[-1].split('/')[0]
        lines += ['', f'Memory after each question: {", ".join(pictures)}; after the last:',
                  '', f'![memory after the last question]({folder}/memory_timeline.png)']
    return '\n'.join(lines) + '\n'
