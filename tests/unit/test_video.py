"""The video engine and validator on real encodes (PyAV): the validator refuses what does not match."""

from __future__ import annotations

import wave
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from genforge.contenttypes.video import VideoSettings, validate
from genforge.engines.base import GenerationJob, ResolvedModel, VideoInputs
from genforge.errors import InvalidOutput

pytest.importorskip("av", reason="the video extra (PyAV) is not installed: pip install 'genforge[video]'")
from genforge.engines.video import VideoEngine, ken_burns_boxes  # noqa: E402

MODEL = ResolvedModel("h264-kenburns", "video", "video", "-", "-", 0, False)


def inputs(tmp_path, seconds: float, name: str = "n") -> VideoInputs:
    image = tmp_path / "i.png"
    gradient = np.linspace(0, 255, 256 * 256 * 3).reshape(256, 256, 3).astype("uint8")
    Image.fromarray(gradient).save(image)
    wav = tmp_path / f"{name}.wav"
    rate = 16000
    t = np.arange(int(rate * seconds)) / rate
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes((np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2").tobytes())
    return VideoInputs(str(image), str(wav))


def job(tmp_path, seconds: float = 1.5) -> GenerationJob:
    params = VideoSettings(image="a", narration="b", platform="square", width=320, height=568)
    return GenerationJob("c", "video", MODEL, "p", None, params, inputs=inputs(tmp_path, seconds))


def test_the_video_lasts_as_long_as_its_narration_and_passes_its_validator(tmp_path):
    j = job(tmp_path)
    events = []
    out = VideoEngine(threads=1).generate(j, events.append, lambda: False)
    assert out.media_type == "video/mp4" and out.facts.frames == 45 and out.facts.narration_s == 1.5
    validate(out, j)
    assert [e["step"] for e in events] == [1]  # one progress event per second of video


def test_the_validator_refuses_a_video_longer_or_shorter_than_the_narration(tmp_path):
    j = job(tmp_path)
    out = VideoEngine(threads=1).generate(j, lambda e: None, lambda: False)
    other = replace(j, inputs=inputs(tmp_path, 2.0, name="longer"))
    with pytest.raises(InvalidOutput, match="the narration 2.00 s"):
        validate(out, other)
    with pytest.raises(InvalidOutput, match="does not decode|lacks"):
        validate(replace(out, data=out.data[: len(out.data) // 3]), j)
    with pytest.raises(InvalidOutput, match="not the asked"):
        validate(out, replace(j, params=j.params.model_copy(update={"width": 640})))


def test_ken_burns_boxes_stay_inside_the_image_and_keep_the_aspect_ratio():
    boxes = ken_burns_boxes(1920, 1920, 1080, 1920, 30, 1.15)
    for x0, y0, x1, y1 in boxes:
        assert -0.5 <= x0 and -0.5 <= y0 and x1 <= 1920.5 and y1 <= 1920.5
        assert abs((x1 - x0) / (y1 - y0) - 1080 / 1920) < 1e-6
    assert boxes[0][2] - boxes[0][0] > boxes[-1][2] - boxes[-1][0]  # it zooms in
