"""Burned-in captions (engines/captions.py): cue timing, the safe area, and blending into a real yuv420p frame."""

from __future__ import annotations

import numpy as np
import pytest

from genforge.engines.base import CaptionWord
from genforge.engines.captions import CaptionRenderer, cues_of, font_path
from genforge.engines.params import CaptionStyle

av = pytest.importorskip("av", reason="the video extra (PyAV) is not installed")
WORDS = (CaptionWord("quiet", 0.2, 0.5), CaptionWord("harbour", 0.6, 1.1), CaptionWord("lights", 1.2, 1.6))


def test_each_word_is_on_screen_from_its_start_until_the_next_one():
    cues = cues_of(WORDS, CaptionStyle(), duration=2.0)
    assert [(c.start, c.end, c.words) for c in cues] == [
        (0.2, 0.6, ("quiet",)),
        (0.6, 1.2, ("harbour",)),
        (1.2, 2.0, ("lights",)),  # the last is held a moment, never past the narration
    ]
    phrase = cues_of(WORDS, CaptionStyle(highlight=True), duration=2.0)
    assert phrase[1].words == ("quiet", "harbour", "lights") and phrase[1].current == 1


def frame(width: int, height: int):
    grey = np.full((height, width, 3), 128, np.uint8)
    return av.VideoFrame.from_ndarray(grey, format="rgb24").reformat(width, height, "yuv420p")


def test_the_caption_is_blended_into_its_box_in_the_safe_area_only():
    font_path()  # DejaVu Sans Bold is there (fonts-dejavu-core), else ModelUnavailable with the apt hint
    w, h = 360, 640
    f = frame(w, h)
    before = f.to_ndarray(format="rgb24").copy()
    r = CaptionRenderer(WORDS, CaptionStyle(), w, h, duration=2.0)
    planes = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size) for p in f.planes]
    r.draw((planes[0], planes[1], planes[2]), 0.8)
    after = f.to_ndarray(format="rgb24")
    changed = np.argwhere(np.abs(after.astype(int) - before.astype(int)).max(axis=2) > 8)
    rows = changed[:, 0]
    assert len(changed) > 500
    assert rows.min() > h * 0.55 and rows.max() < h * 0.8  # around 68 % of the height: clear of the app's buttons
    assert (after.min(axis=2) > 235).sum() > 100 and (after.max(axis=2) < 60).sum() > 100  # white on dark
    untouched = frame(w, h)
    r.draw(tuple(np.frombuffer(p, np.uint8).reshape(p.height, p.line_size) for p in untouched.planes), 5.0)
    assert np.array_equal(untouched.to_ndarray(format="rgb24"), before)  # no caption after the narration
