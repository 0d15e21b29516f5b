"""The identity policy step: a persona's face, measured on every image made for it.

Content-type-agnostic in its shape (`IdentityPolicy` in, `IdentityFacts` out or a PolicyViolation, retried by the
service with the next seed like a text policy); images are measured with dlib's face embeddings
(genforge.media.faces). A picture with no detectable face under an identity policy fails: it is not a pass.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from typing import Any

from genforge.core.catalog import FACE_ENCODER, FACE_LANDMARKS, ModelCatalog
from genforge.engines.base import IdentityFacts, IdentityPolicy
from genforge.errors import InvalidOutput, PolicyViolation
from genforge.media import faces


@dataclass(frozen=True)
class Reference:
    """A reference picture of the persona: its id (content or upload), the file's sha256 and path."""

    ref: str
    sha256: str
    path: str


def _rgb(data: bytes) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


class IdentityCheck:
    """Measures outputs against reference faces; reference embeddings are kept by the file's sha256. The model
    files are resolved by the catalog (packaged entries, their sha256 checked) on first use."""

    def __init__(self, catalog: ModelCatalog) -> None:
        self.catalog = catalog
        self._embedder: faces.FaceEmbedder | None = None
        self._model = faces.MODEL
        self._refs: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def embedder(self) -> faces.FaceEmbedder:
        with self._lock:
            if self._embedder is None:
                encoder = self.catalog.resolve(FACE_ENCODER, "identity")
                landmarks = self.catalog.resolve(FACE_LANDMARKS, "identity")
                self._embedder = faces.FaceEmbedder(encoder.path, landmarks.path)
                self._model = (
                    f"{FACE_ENCODER} (sha256 {encoder.sha256[:12]}) + {FACE_LANDMARKS} (sha256 "
                    f"{landmarks.sha256[:12]}), dlib"
                )
            return self._embedder

    def _reference(self, ref: Reference) -> Any:
        with self._lock:
            known = self._refs.get(ref.sha256)
        if known is not None:
            return known
        with open(ref.path, "rb") as f:
            face = self.embedder.face(_rgb(f.read()))
        if face is None:
            raise InvalidOutput(
                f"the persona's reference image {ref.ref} shows no face that can be detected",
                hint="Give the persona a reference picture with one clear, frontal face.",
            )
        with self._lock:
            self._refs[ref.sha256] = face.embedding
        return face.embedding

    def measure(self, data: bytes, policy: IdentityPolicy, references: list[Reference]) -> IdentityFacts:
        """The output's similarity to the nearest reference face; PolicyViolation below the policy's threshold
        or when the output shows no face."""
        embeddings = [self._reference(ref) for ref in references]
        face = self.embedder.face(_rgb(data))
        if face is None:
            raise PolicyViolation(
                "the image shows no detectable face, so its similarity to the persona's reference face cannot be "
                f"measured (min_similarity {policy.min_similarity})",
                details={"similarity": None, "threshold": policy.min_similarity},
            )
        best = max(faces.similarity(face.embedding, e) for e in embeddings)
        facts = IdentityFacts(
            similarity=round(best, 4),
            threshold=policy.min_similarity,
            reference=[ref.ref for ref in references],
            model=self._model,
        )
        if best < policy.min_similarity:
            raise PolicyViolation(
                f"the face is not the persona's: similarity {best:.3f} to its reference face is below the "
                f"persona's min_similarity {policy.min_similarity}",
                hint="Another seed may show the persona's face; or lower the persona's identity.min_similarity.",
                details={"similarity": round(best, 4), "threshold": policy.min_similarity},
            )
        return facts
