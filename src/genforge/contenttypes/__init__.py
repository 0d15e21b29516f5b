"""The content types genforge generates, one registry entry each (see base.ContentTypeSpec).

An entry gathers what is specific to a type: the parameters a client may send, the complete parameters the
planner makes of them, the record's typed section, the validator, the artifact's media type, the check of
`models add`, and the hint when no model is installed. Adding a content type is one module here plus its
engine in genforge/engines/.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from genforge.contenttypes import image, speech, text, transcript, video
from genforge.contenttypes.base import ContentTypeSpec, Plan
from genforge.errors import InvalidRequest

REGISTRY: dict[str, ContentTypeSpec] = {
    spec.name: spec for spec in (text.SPEC, image.SPEC, speech.SPEC, video.SPEC, transcript.SPEC)
}
CONTENT_TYPES = tuple(REGISTRY)

# The content record: common fields (genforge.contenttypes.records.RecordBase) and the section of its type.
ContentRecord = Annotated[
    text.TextRecord | image.ImageRecord | speech.SpeechRecord | video.VideoRecord | transcript.TranscriptRecord,
    Field(discriminator="content_type"),
]


def spec_of(content_type: str) -> ContentTypeSpec:
    spec = REGISTRY.get(content_type)
    if spec is None:
        raise InvalidRequest(
            f"content_type: {content_type!r} is not a content type; types: {', '.join(REGISTRY)}",
            field="content_type",
        )
    return spec


MEDIA_TYPES = {spec.media_type: spec.suffix for spec in REGISTRY.values()}

__all__ = ["CONTENT_TYPES", "REGISTRY", "ContentRecord", "ContentTypeSpec", "MEDIA_TYPES", "Plan", "spec_of"]
