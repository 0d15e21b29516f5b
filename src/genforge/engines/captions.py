"""Burned-in captions for videos: word-level captions from the narration's word timings, drawn with DejaVu Sans
Bold (Debian's fonts-dejavu-core): white text with a dark outline on a translucent dark box, readable over any
picture, placed inside the platform's safe area (vertical reels keep clear of the bottom fifth, where the app's
own buttons and text sit).

Each caption (one word, or a phrase with its current word highlighted) is drawn once as an RGBA patch; a frame
then blends the patch of the caption on screen at its time into the pixels of its box only (numpy), so the cost
per frame is the size of the caption, not of the frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genforge.engines.base import CaptionWord
from genforge.engines.params import CaptionStyle
from genforge.errors import ModelUnavailable

FONT_PATHS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",  # Debian/Ubuntu fonts-dejavu-core
    "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf",  # Fedora
    "/usr/share/fonts/TTF/DejaVuSans-Bold.ttf",  # Arch
)
FONT_HINT = "Install the font: `apt-get install fonts-dejavu-core` (Debian/Ubuntu)."
SIZE_OF_WIDTH = {"small": 0.055, "medium": 0.075, "large": 0.1}  # font size as a share of the frame's width
PHRASE_WORDS = 4  # highlight mode: words shown together
HOLD_LAST_S = 0.4  # the last word stays this long after it ends
HIGHLIGHT = (255, 214, 0, 255)
WHITE = (255, 255, 255, 255)


def font_path() -> str:
    for path in FONT_PATHS:
        if Path(path).is_file():
            return path
    raise ModelUnavailable("captions need the DejaVu Sans Bold font, which is not installed", hint=FONT_HINT)


def safe_center_y(position: str, width: int, height: int) -> float:
    """The caption's vertical centre as a share of the height, inside the platform's safe area."""
    vertical = height > width
    if position == "top":
        return 0.2 if vertical else 0.12
    if position == "middle":
        return 0.5
    return 0.68 if vertical else 0.85


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    words: tuple[str, ...]
    current: int  # the word being spoken, highlighted in phrase mode


def cues_of(words: tuple[CaptionWord, ...], style: CaptionStyle, duration: float) -> list[Cue]:
    """One cue per spoken word, from its start until the next word starts (the last one is held a moment)."""
    out = []
    for i, w in enumerate(words):
        end = words[i + 1].start if i + 1 < len(words) else min(duration, w.end + HOLD_LAST_S)
        if style.highlight:
            first = (i // PHRASE_WORDS) * PHRASE_WORDS
            group = tuple(x.word for x in words[first : first + PHRASE_WORDS])
            out.append(Cue(w.start, max(end, w.start), group, i - first))
        else:
            out.append(Cue(w.start, max(end, w.start), (w.word,), 0))
    return out


class CaptionRenderer:
    """Draws cues for frames of one size and blends them in."""

    def __init__(self, words: tuple[CaptionWord, ...], style: CaptionStyle, width: int, height: int, duration: float):
        from PIL import ImageFont

        self.style, self.width, self.height = style, width, height
        self.font_file = font_path()
        self.font = ImageFont.truetype(self.font_file, max(12, round(width * SIZE_OF_WIDTH[style.size])))
        self.cues = cues_of(words, style, duration)
        self.patches: dict[int, tuple[Any, Any, int, int]] = {}  # cue index -> (rgb, alpha, x, y)
        self.index = 0

    def _patch(self, i: int) -> tuple[Any, Any, int, int]:
        found = self.patches.get(i)
        if found is not None:
            return found
        import numpy as np
        from PIL import Image, ImageDraw

        cue = self.cues[i]
        stroke = max(2, self.font.size // 14)
        space = self.font.getlength(" ")
        lengths = [self.font.getlength(w) for w in cue.words]
        ascent, descent = self.font.getmetrics()
        pad = self.font.size // 3
        text_w = sum(lengths) + space * (len(lengths) - 1)
        box_w, box_h = round(min(self.width, text_w + 2 * pad)), round(ascent + descent + pad)
        img = Image.new("RGBA", (box_w, box_h), (0, 0, 0, 0))
        draw = ImageDraw.Draw(img)
        draw.rounded_rectangle((0, 0, box_w - 1, box_h - 1), radius=pad // 2, fill=(0, 0, 0, 165))
        x: float = pad
        for k, (word, length) in enumerate(zip(cue.words, lengths, strict=True)):
            fill = HIGHLIGHT if (self.style.highlight and k == cue.current) else WHITE
            draw.text((x, pad // 2), word, font=self.font, fill=fill, stroke_width=stroke, stroke_fill=(0, 0, 0, 255))
            x += length + space
        arr = np.asarray(img)
        rgb = arr[:, :, :3].astype(np.float32)
        alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
        px = max(0, (self.width - box_w) // 2)
        py = round(self.height * safe_center_y(self.style.position, self.width, self.height) - box_h / 2)
        py = min(max(0, py), self.height - box_h)
        found = (rgb * alpha, 1.0 - alpha, px, py)
        self.patches = {i: found}  # cues come in order: keep only the current one
        return found

    def cue_at(self, t: float) -> int | None:
        while self.index < len(self.cues) and self.cues[self.index].end <= t:
            self.index += 1
        if self.index < len(self.cues) and self.cues[self.index].start <= t < self.cues[self.index].end:
            return self.index
        return None

    def draw(self, frame: Any, t: float) -> Any:
        """`frame` (an RGB uint8 array of the output size) with the caption on screen at `t` blended in."""
        import numpy as np

        i = self.cue_at(t)
        if i is None:
            return frame
        premult, keep, x, y = self._patch(i)
        h, w = premult.shape[:2]
        region = frame[y : y + h, x : x + w].astype(np.float32)
        frame = frame.copy() if not frame.flags.writeable else frame
        frame[y : y + h, x : x + w] = (premult + region * keep).astype(np.uint8)
        return frame
