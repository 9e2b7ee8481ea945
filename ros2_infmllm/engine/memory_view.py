"""The memory view: one RGB picture of what the bounded memory holds now. No ROS here.

Top: thumbnails of the frames whose tokens the cache still holds (newest first, with their
stamp, camera and kept tokens). Bottom: the stream so far as a timeline (x = arrival
index, 0 at the left, the newest token at the right), one row per camera plus one for text
(system prompt, questions, answers); every kept token is a tick coloured by why it is
kept: sink (forced first tokens), recent window (forced newest tokens) or retrieved
(chosen by the policy's relevance). Everything not ticked was evicted. The node publishes
it on ``~/memory_view``; replay tools save it as a PNG.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import cv2
import numpy as np

WIDTH = 960
THUMB_W = 96
ROLE_COLOURS = {"sink": (220, 60, 60), "recent": (60, 180, 75), "retrieved": (40, 110, 230)}
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text(img: np.ndarray, text: str, x: int, y: int, scale: float = 0.4,
          colour: tuple = (230, 230, 230)) -> None:
    cv2.putText(img, text, (x, y), _FONT, scale, colour, 1, cv2.LINE_AA)


def roles(n_tokens: int, n_sink: int, n_recent: int) -> list[str]:
    """Why each kept token (in cache order) is kept: sink, recent or retrieved."""
    out = []
    for i in range(n_tokens):
        if i < n_sink:
            out.append("sink")
        elif i >= n_tokens - n_recent:
            out.append("recent")
        else:
            out.append("retrieved")
    return out


def render(view: dict[str, Any], title: str = "") -> np.ndarray:
    """Draw ``StreamingSession.memory_map()``'s result; returns an HxWx3 uint8 RGB image."""
    tokens = view.get("tokens", [])
    seen = max(1, int(view.get("tokens_seen", 0)))
    frames = view.get("frames", {})
    per_source = Counter(s for _, s, _ in tokens)
    cameras = sorted({cam for _, cam, _ in frames.values()})
    rows = cameras + ["text"]
    per_row = (WIDTH - 20) // (THUMB_W + 6)
    shown = sorted(frames.items(), key=lambda kv: -kv[1][0])[:2 * per_row]
    thumb_h = 72
    top = 28 + (thumb_h + 30) * max(1, (len(shown) + per_row - 1) // per_row)
    row_h = 22
    height = top + 30 + row_h * len(rows) + 46
    img = np.full((height, WIDTH, 3), 24, np.uint8)
    head = title or (f"{view.get('policy', '')} memory: {len(tokens)} of "
                     f"{view.get('budget') or 'unbounded'} tokens kept, {seen} seen, "
                     f"{len(frames)} frames held")
    _text(img, head, 10, 18, 0.5)
    for k, (sid, (stamp, cam, thumb)) in enumerate(shown):
        x = 10 + (k % per_row) * (THUMB_W + 6)
        y = 28 + (k // per_row) * (thumb_h + 30)
        if thumb is not None:
            t = cv2.resize(thumb, (THUMB_W, thumb_h), interpolation=cv2.INTER_AREA)
            img[y:y + thumb_h, x:x + THUMB_W] = t
        else:
            cv2.rectangle(img, (x, y), (x + THUMB_W, y + thumb_h), (90, 90, 90), 1)
        _text(img, f"{stamp % 10000:.1f}s {per_source[sid]}t", x, y + thumb_h + 12, 0.35)
        _text(img, cam[-16:], x, y + thumb_h + 24, 0.3, (170, 170, 170))
    y0 = top + 20
    _text(img, "kept tokens over stream time (arrival index)", 10, y0 - 6, 0.4)
    x0, x1 = 80, WIDTH - 10
    cam_of = {sid: cam for sid, (_, cam, _) in frames.items()}
    kinds = roles(len(tokens), int(view.get("n_sink", 0)), int(view.get("n_recent", 0)))
    for r, name in enumerate(rows):
        y = y0 + r * row_h
        cv2.rectangle(img, (x0, y), (x1, y + row_h - 4), (45, 45, 45), -1)
        _text(img, name[-11:], 4, y + 13, 0.35)
    for (arrival, sid, kind), role in zip(tokens, kinds):
        row = rows.index(cam_of[sid]) if kind == "frame" and sid in cam_of else len(rows) - 1
        x = x0 + int((x1 - x0 - 1) * arrival / seen)
        y = y0 + row * row_h
        cv2.line(img, (x, y + 1), (x, y + row_h - 6), ROLE_COLOURS[role], 1)
    y = y0 + len(rows) * row_h + 14
    _text(img, "0", x0, y, 0.35)
    _text(img, str(seen), x1 - 8 * len(str(seen)), y, 0.35)
    x = x0 + 80
    for role, colour in ROLE_COLOURS.items():
        cv2.rectangle(img, (x, y + 8), (x + 12, y + 18), colour, -1)
        _text(img, role, x + 16, y + 17, 0.4)
        x += 130
    return img
