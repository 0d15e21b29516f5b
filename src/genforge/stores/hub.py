"""Verified model downloads from the Hugging Face Hub (or any server that speaks its file protocol).

`huggingface_hub` does the protocol: the endpoint (HF_ENDPOINT), the token (HF_TOKEN), offline mode
(HF_HUB_OFFLINE), the metadata HEAD (commit, LFS sha256, size) and the ranged GET with its retries.
genforge keeps the partial file itself: huggingface_hub 2.4 downloads into a per-process temporary file
that it deletes on failure, so its own cache cannot resume after Ctrl-C. Here a partial file named after
the commit and the hub's hash stays until the next pull resumes it with a Range request.

Every file is hashed while it is written and compared with the hub's own hash (the LFS sha256; the git
blob sha1 for small non-LFS files) or with a sha256 the catalog pins, before anything is registered.
A mismatch deletes the file and raises ModelIntegrityFailed.

The hub names the paths a pull writes to (the commit from X-Repo-Commit or model_info(), a pipeline's file
names and the component keys of its model_index.json), and the same server supplies the hashes, so the hashes
do not vouch for the names. A commit must be 40 hex digits and every name a relative path that stays inside its
folder (checked after resolving links); otherwise the pull raises ModelIntegrityFailed before it writes a file.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genforge.errors import ModelIntegrityFailed, ModelNotFound, ModelUnavailable
from genforge.media.private import open_private, private_dir

if TYPE_CHECKING:
    from huggingface_hub import HfFileMetadata

# Progress: (file name, bytes done, total bytes or None).
Progress = Callable[[str, int, int | None], None]
# Seconds to wait for the hub's metadata answer: an unreachable hub fails fast, never hangs.
METADATA_TIMEOUT_S = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or 5)
OFFLINE_HINT = (
    "No model hub is reachable from here. Copy the model file onto this machine and register it with "
    "`genforge models add PATH` (add `--type image` for a diffusers directory)."
)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHA1 = re.compile(r"^[0-9a-f]{40}$")
HOSTILE_HINT = (
    "The hub (or the mirror in HF_ENDPOINT) named a path outside the models folder, or a commit that is not one; "
    "nothing was written. Do not use this source."
)


def _commit(value: str | None, ref: HubRef) -> str:
    """The commit the hub resolved the revision to: the folder a pull writes into, so 40 hex digits or nothing.
    A hub that names none leaves the revision asked for, which must then itself be a commit."""
    commit = value if value is not None else ref.revision
    if not isinstance(commit, str) or not _SHA1.fullmatch(commit):
        said = f"the commit {commit!r}" if value is not None else f"no commit for the revision {commit!r}"
        raise ModelIntegrityFailed(f"{ref.repo}: the hub named {said}, not 40 hex digits", hint=HOSTILE_HINT)
    return commit


def _name_problem(name: object) -> str | None:
    """Why a hub-supplied file name cannot be a path inside a folder, or None when it can."""
    if not isinstance(name, str) or not name:
        return "is empty"
    if "\0" in name:
        return "holds a NUL character"
    if os.path.isabs(name):
        return "is an absolute path"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "has an empty, '.' or '..' component"
    return None


def _inside(folder: Path, name: str, ref: HubRef) -> Path:
    """folder/name, when `name` is a relative path that stays inside `folder` once links are resolved."""
    problem = _name_problem(name)
    if problem is None:
        real_folder, real = os.path.realpath(folder), os.path.realpath(folder / name)
        if real == real_folder or os.path.commonpath([real_folder, real]) != real_folder:
            problem = "leads outside the model's folder"
    if problem is not None:
        raise ModelIntegrityFailed(f"{ref.repo}: the hub's file name {name!r} {problem}", hint=HOSTILE_HINT)
    return folder / name


@dataclass(frozen=True)
class HubRef:
    repo: str  # OWNER/REPO
    file: str | None  # a single file (GGUF), or None for a diffusers pipeline
    revision: str = "main"


@dataclass(frozen=True)
class Pulled:
    """What a pull produced: a verified file (or pipeline directory) and where it came from."""

    path: Path
    repo: str
    revision: str  # the commit the hub resolved the revision to
    file: str | None
    sha256: str  # of the file; for a pipeline, the catalog's directory hash is computed by the caller
    size_bytes: int
    license: str | None


def parse_ref(ref: str, revision: str | None = None) -> HubRef:
    """`hf:OWNER/REPO/PATH/FILE.gguf` (one file) or `hf:OWNER/REPO` (a diffusers pipeline)."""
    body = ref.removeprefix("hf:")
    parts = [p for p in body.split("/") if p]
    if len(parts) < 2 or any(p in (".", "..") for p in parts):
        raise ModelNotFound(
            f"{ref!r} is not a hub reference; use hf:OWNER/REPO/FILE.gguf or hf:OWNER/REPO", field="name"
        )
    return HubRef("/".join(parts[:2]), "/".join(parts[2:]) or None, revision or "main")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def _online() -> Iterator[None]:
    """huggingface_hub reads HF_HUB_OFFLINE once, at import; genforge reads it at each pull (checked before
    this), so a pull runs with the library's switch open and puts it back after (the diffusers engine closes it).
    """
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE, constants.DOWNLOAD_CHUNK_SIZE
    # 1 MiB pieces instead of 10 MiB: a progress bar that moves on slow links, less to fetch again after a cut.
    constants.HF_HUB_OFFLINE, constants.DOWNLOAD_CHUNK_SIZE = False, 1 << 20
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, constants.DOWNLOAD_CHUNK_SIZE = before


def _endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def _translate(exc: Exception, what: str) -> Exception:
    """huggingface_hub's and httpx's errors as genforge's typed ones (what a user can act on)."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(exc, OfflineModeIsEnabled):
        return ModelUnavailable(f"{what}: the hub is switched off (HF_HUB_OFFLINE)", hint=OFFLINE_HINT)
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status in (401, 403):
            return ModelUnavailable(
                f"{what}: the hub refused access ({status}): the repository is private or gated, or the token is wrong",
                hint="Set HF_TOKEN to a token that may read it (and accept the model's licence on its page).",
            )
        if status == 404:
            return ModelNotFound(
                f"{what}: not on the hub (404: no such repository, revision or file)",
                hint="Check the owner, repository, file name and --revision.",
            )
        return ModelUnavailable(f"{what}: the hub answered {status}", hint="Try again later.")
    if isinstance(exc, httpx2.TransportError | OSError | ConnectionError):
        return ModelUnavailable(f"{what}: the hub at {_endpoint()} cannot be reached ({exc})", hint=OFFLINE_HINT)
    return exc


def _metadata(ref: HubRef, filename: str) -> tuple[str, HfFileMetadata]:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(ref.repo, filename, revision=ref.revision, endpoint=_endpoint())
    try:
        return url, get_hf_file_metadata(url, token=_token(), timeout=METADATA_TIMEOUT_S, endpoint=_endpoint())
    except Exception as exc:
        raise _translate(exc, f"{ref.repo}/{filename}@{ref.revision}") from None


class _Bar:
    """Stands in for huggingface_hub's tqdm bar and forwards its counts to `progress`."""

    def __init__(self, progress: Progress | None, name: str, **kw: Any):
        self.progress, self.name = progress, name
        self.total, self.done = kw.get("total"), kw.get("initial") or 0
        self._report()

    def _report(self) -> None:
        if self.progress:
            self.progress(self.name, self.done, self.total)

    def update(self, n: int = 1) -> None:
        self.done += n
        self._report()

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _HashingFile:
    """A binary append file that hashes what is written, in a thread of its own (hashlib releases the GIL), so
    verification overlaps the download; a rewind (the server ignored Range) forces a re-hash at the end."""

    def __init__(self, path: Path, algorithm: str):
        self.path, self.algorithm = path, algorithm
        self.hash = hashlib.new(algorithm)
        self.dirty = False
        if path.exists():
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    self.hash.update(block)
        self.f = open_private(path, "ab")
        self.pending: queue.Queue[bytes | None] = queue.Queue(maxsize=64)  # at most 64 MiB waiting to be hashed
        self.hasher = threading.Thread(target=self._hash_pending, name="genforge-hub-sha256", daemon=True)
        self.hasher.start()

    def _hash_pending(self) -> None:
        while (block := self.pending.get()) is not None:
            self.hash.update(block)

    def write(self, data: bytes) -> int:
        self.pending.put(data)
        return self.f.write(data)

    def tell(self) -> int:
        return self.f.tell()

    def seek(self, *args: int) -> int:
        self.dirty = True
        return self.f.seek(*args)

    def truncate(self, *args: int | None) -> int:
        self.dirty = True
        return self.f.truncate(*args)

    def close(self) -> None:
        self.pending.put(None)
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        self.hasher.join()


def _hash_file(path: Path, algorithm: str, git_blob: bool) -> str:
    h = hashlib.new(algorithm)
    if git_blob:
        h.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _fetch(
    ref: HubRef,
    filename: str,
    dest: Path,
    pinned: str | None,
    progress: Progress | None,
    found: tuple[str, HfFileMetadata] | None = None,
) -> tuple[str, str]:
    """Download one file to `dest` (resuming a partial one) and verify it; returns (commit, sha256).
    `found`: the (url, metadata) of a HEAD already made for this file."""
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    url, meta = found or _metadata(ref, filename)
    etag = (meta.etag or "").strip('"').lower()
    commit = _commit(meta.commit_hash, ref)
    # What the file must hash to: the catalog's pin, else the hub's LFS sha256, else its git blob sha1.
    if pinned:
        algorithm, expected, git_blob = "sha256", pinned, False
    elif _SHA256.match(etag):
        algorithm, expected, git_blob = "sha256", etag, False
    elif _SHA1.match(etag):
        algorithm, expected, git_blob = "sha1", etag, True
    else:
        raise ModelIntegrityFailed(
            f"{ref.repo}/{filename}: the hub gave no sha256 for it (ETag {meta.etag!r}), so it cannot be verified",
            hint="Pin its sha256 in the catalog, or download it yourself and use `genforge models add PATH`.",
        )
    private_dir(dest.parent)
    if dest.is_file() and _hash_file(dest, "sha256", False) == (expected if algorithm == "sha256" else None):
        return commit, expected  # already here and intact
    partial = dest.with_name(f"{dest.name}.{expected[:16]}.partial")
    if git_blob:  # small non-LFS file: no resume (the blob hash needs the size first); fetch it whole
        partial.unlink(missing_ok=True)
    out = _HashingFile(partial, algorithm)
    done = out.tell()
    try:
        http_get(
            meta.location or url,
            out,  # type: ignore[arg-type]  # http_get only writes, tells, seeks and truncates: all _HashingFile has
            resume_size=done,
            headers=build_hf_headers(token=_token()),
            expected_size=meta.size,
            # http_get only calls tqdm_class(**kw) and the bar's update(): a factory of _Bar stands in for the class
            tqdm_class=lambda **kw: _Bar(progress, filename, **kw),  # type: ignore[arg-type]
        )
    except Exception as exc:
        raise _translate(exc, f"{ref.repo}/{filename}") from None
    finally:
        out.close()  # flushed and synced: after a failure or Ctrl-C the partial file stays for the next pull
    if git_blob or out.dirty:
        actual = _hash_file(partial, algorithm, git_blob)
    else:
        actual = out.hash.hexdigest()
    if actual != expected:
        partial.unlink(missing_ok=True)
        source = "the sha256 the catalog pins" if pinned else "the hub's own hash"
        raise ModelIntegrityFailed(
            f"{ref.repo}/{filename}: the downloaded file hashes to {actual[:16]}…, {source} is {expected[:16]}…; "
            "it was deleted and nothing was registered",
            hint="The download or the server is corrupt. Pull again; if it fails again, do not use this source.",
        )
    sha = actual if algorithm == "sha256" else _hash_file(partial, "sha256", False)
    os.replace(partial, dest)
    return commit, sha


def pull_file(ref: HubRef, root: Path, pinned: str | None = None, progress: Progress | None = None) -> Pulled:
    """One file (a GGUF) into root/OWNER--REPO/COMMIT/FILE, verified."""
    if _offline():
        raise ModelUnavailable(f"{ref.repo}/{ref.file}: HF_HUB_OFFLINE is set", hint=OFFLINE_HINT)
    with _online():
        return _pull_file(ref, root, pinned, progress)


def _pull_file(ref: HubRef, root: Path, pinned: str | None, progress: Progress | None) -> Pulled:
    if ref.file is None:  # callers pull a pipeline (hf:OWNER/REPO) with pull_pipeline
        raise ModelNotFound(f"hf:{ref.repo} names no file; use hf:OWNER/REPO/FILE.gguf", field="name")
    found = _metadata(ref, ref.file)  # resolves the revision to a commit before choosing the directory
    folder = root / ref.repo.replace("/", "--") / _commit(found[1].commit_hash, ref)
    dest = _inside(folder, ref.file, ref)
    commit, sha = _fetch(ref, ref.file, dest, pinned, progress, found)
    return Pulled(dest, ref.repo, commit, ref.file, sha, dest.stat().st_size, _license(ref, commit))


def _license(ref: HubRef, commit: str) -> str | None:
    """The licence the model card declares (`license:` in README.md's front matter), if it has one."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session

    url = hf_hub_url(ref.repo, "README.md", revision=commit, endpoint=_endpoint())
    import httpx2

    try:
        r = get_session().get(url, headers=build_hf_headers(token=_token()), timeout=METADATA_TIMEOUT_S)
    except (httpx2.HTTPError, OSError):  # informative only: a pull never fails for want of a licence line
        return None
    if r.status_code != 200 or not r.text.startswith("---"):
        return None
    m = re.search(r"^license:\s*(\S+)", r.text.split("\n---", 1)[0], re.MULTILINE)
    return m.group(1) if m else None


# The files a diffusers pipeline needs: its index, each component's configs and tokenizer files, and one set of
# full-precision safetensors weights (not the fp16/ema variants, .bin or .ckpt duplicates).
PIPELINE_PATTERNS = ("*.json", "*.txt", "*.model", "diffusion_pytorch_model.safetensors", "model.safetensors")


def pipeline_files(index: dict[str, Any], names: list[str], repo: str = "") -> list[str]:
    """The files to fetch. A component key is a folder name that diffusers later joins to the pipeline's
    directory, so it must be one plain path component (ModelIntegrityFailed otherwise)."""
    if not isinstance(index, dict):
        raise ModelIntegrityFailed(f"{repo}: model_index.json is not a JSON object", hint=HOSTILE_HINT)
    components = [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list)]
    for c in components:
        if _name_problem(c) or "/" in c:
            raise ModelIntegrityFailed(
                f"{repo}: model_index.json names the component {c!r}, which is not a plain folder name",
                hint=HOSTILE_HINT,
            )
    wanted = ["model_index.json"]
    for c in components:
        wanted += [
            n
            for n in names
            if n.startswith(c + "/") and any(fnmatch.fnmatch(n[len(c) + 1 :], p) for p in PIPELINE_PATTERNS)
        ]
    return wanted


def pull_pipeline(ref: HubRef, root: Path, progress: Progress | None = None) -> Pulled:
    """A diffusers pipeline (hf:OWNER/REPO): only the files it needs, each verified, into one directory."""
    if _offline():
        raise ModelUnavailable(f"{ref.repo}: HF_HUB_OFFLINE is set", hint=OFFLINE_HINT)
    with _online():
        return _pull_pipeline(ref, root, progress)


def _pull_pipeline(ref: HubRef, root: Path, progress: Progress | None) -> Pulled:
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=_endpoint(), token=_token()).model_info(
            ref.repo, revision=ref.revision, timeout=METADATA_TIMEOUT_S
        )
    except Exception as exc:
        raise _translate(exc, f"{ref.repo}@{ref.revision}") from None
    commit = _commit(info.sha, ref)
    names = [s.rfilename for s in info.siblings or []]
    if "model_index.json" not in names:
        raise ModelNotFound(f"{ref.repo} is not a diffusers pipeline (no model_index.json)", field="name")
    folder = root / ref.repo.replace("/", "--") / commit
    for name in names:  # every name the hub lists, before anything is written
        _inside(folder, name, ref)
    pinned = HubRef(ref.repo, None, commit)
    index_path = folder / "model_index.json"
    made = [d for d in (folder.parent, folder) if not d.exists()]
    had_index = index_path.exists()
    _fetch(pinned, "model_index.json", index_path, None, progress)
    try:
        try:
            index = json.loads(index_path.read_text())
        except ValueError as exc:
            raise ModelIntegrityFailed(f"{ref.repo}: model_index.json is not JSON ({exc})", hint=HOSTILE_HINT) from None
        wanted = pipeline_files(index, names, ref.repo)[1:]
    except ModelIntegrityFailed:  # a hostile index: what this pull wrote goes too
        if not had_index:
            index_path.unlink(missing_ok=True)
        for d in reversed(made):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        raise
    for name in wanted:
        _fetch(pinned, name, _inside(folder, name, pinned), None, progress)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.name.endswith(".partial"))
    return Pulled(folder, ref.repo, commit, None, "", size, _license(pinned, commit))
