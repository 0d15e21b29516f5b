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
MAX_WIDTH = 0.9  # the widest a caption's box may be, as a share of the frame's width
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
        self.patches: dict[int, tuple[Any, Any, int, int]] = {}  # cue index -> (planes, -, x, y)
        self.index = 0

    def _patch(self, i: int) -> tuple[Any, Any, int, int]:
        found = self.patches.get(i)
        if found is not None:
            return found
        import numpy as np
        from PIL import Image, ImageDraw

        cue = self.cues[i]
        font = self.font
        text_w = font.getlength(" ".join(cue.words)) + 2 * (font.size // 3)
        if text_w > self.width * MAX_WIDTH:  # too wide for the frame: this cue's font is smaller, to fit
            font = font.font_variant(size=max(10, int(font.size * self.width * MAX_WIDTH / text_w)))
        stroke = max(2, font.size // 14)
        space = font.getlength(" ")
        lengths = [font.getlength(w) for w in cue.words]
        ascent, descent = font.getmetrics()
        pad = font.size // 3
        text_w = sum(lengths) + space * (len(lengths) - 1)
        box_w, box_h = round(min(self.width, text_w + 2 * pad)), round(ascent + descent + pad)
        img = Image.new("RGBA", (box_w, box_h), (0, 0, 0, 0))
        draw = ImageDraw.Draw(img)
        draw.rounded_rectangle((0, 0, box_w - 1, box_h - 1), radius=pad // 2, fill=(0, 0, 0, 165))
        x: float = pad
        for k, (word, length) in enumerate(zip(cue.words, lengths, strict=True)):
            fill = HIGHLIGHT if (self.style.highlight and k == cue.current) else WHITE
            draw.text((x, pad // 2), word, font=font, fill=fill, stroke_width=stroke, stroke_fill=(0, 0, 0, 255))
            x += length + space
        arr = np.asarray(img).astype(np.float32) / 255.0
        if box_w % 2 or box_h % 2:  # even sizes and offsets: the chroma planes are half the size
            arr = np.pad(arr, ((0, box_h % 2), (0, box_w % 2), (0, 0)))
        r, g, b, alpha = arr[:, :, 0], arr[:, :, 1], arr[:, :, 2], arr[:, :, 3]
        # BT.601 limited range: what FFmpeg's scaler makes of RGB for yuv420p (the frames' own conversion)
        y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
        u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
        v = 128 + 112.0 * r - 93.786 * g - 18.214 * b

        def half(plane: Any) -> Any:  # 2x2 means
            return plane.reshape(plane.shape[0] // 2, 2, plane.shape[1] // 2, 2).mean(axis=(1, 3))

        alpha_c = half(alpha)
        px = max(0, (self.width - arr.shape[1]) // 2) & ~1
        py = round(self.height * safe_center_y(self.style.position, self.width, self.height) - arr.shape[0] / 2)
        py = min(max(0, py), self.height - arr.shape[0]) & ~1
        found = (
            (y * alpha, 1.0 - alpha, half(u * alpha), half(v * alpha), 1.0 - alpha_c),
            None,
            px,
            py,
        )
        self.patches = {i: found}  # cues come in order: keep only the current one
        return found

    def cue_at(self, t: float) -> int | None:
        while self.index < len(self.cues) and self.cues[self.index].end <= t:
            self.index += 1
        if self.index < len(self.cues) and self.cues[self.index].start <= t < self.cues[self.index].end:
            return self.index
        return None

    def draw(self, planes: tuple[Any, Any, Any], t: float) -> None:
        """Blend the caption on screen at `t` into its box of a yuv420p frame, in place: `planes` are the frame's
        Y, U and V planes as 2-D uint8 arrays (rows of the plane's line size; U and V half as wide and high)."""
        import numpy as np

        i = self.cue_at(t)
        if i is None:
            return
        (y_pm, y_keep, u_pm, v_pm, c_keep), _, x, y = self._patch(i)
        h, w = y_pm.shape
        luma, u, v = planes
        region = luma[y : y + h, x : x + w]
        region[...] = (y_pm + region * y_keep).astype(np.uint8)
        for plane, pm in ((u, u_pm), (v, v_pm)):
            part = plane[y // 2 : y // 2 + h // 2, x // 2 : x // 2 + w // 2]
            part[...] = (pm + part * c_keep).astype(np.uint8)
