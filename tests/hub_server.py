"""A local server that speaks the Hugging Face Hub's download protocol, for the pull tests (stdlib only).

HEAD/GET /{owner}/{repo}/resolve/{revision}/{path}: X-Repo-Commit, ETag and X-Linked-Etag (the LFS sha256 for
large files, the git blob sha1 for small ones, as the hub does), X-Linked-Size, Range requests; and
GET /api/models/{owner}/{repo}/revision/{revision} (the file list a pipeline pull reads). Faults on demand:
a hash that lies, a connection cut once halfway, slow streaming, a repository that wants a token; and a hostile
hub: a commit that is a path (`commit`), file names it lists but never serves (`listing`).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
import time
from dataclasses import dataclass, field

COMMIT = "c0ffee0123456789abcdef0123456789abcdef01"
LFS_MIN = 1024  # files at least this big are "LFS" files: their ETag is their sha256


@dataclass
class HubFile:
    data: bytes
    claimed_sha256: str | None = None  # what the server says; differs from the data's for a corrupt file
    cut_once_at: int | None = None  # drop the connection after this many bytes, on the first GET only
    slow: bool = False  # stream in small pieces with pauses (for Ctrl-C)

    def __post_init__(self) -> None:  # hashed once: the hub serves its stored hash, it does not re-hash per request
        if len(self.data) >= LFS_MIN:
            self._etag = self.claimed_sha256 or hashlib.sha256(self.data).hexdigest()
        else:
            self._etag = hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    def etag(self) -> str:
        return self._etag


@dataclass
class Hub:
    files: dict[str, HubFile] = field(default_factory=dict)  # "owner/repo/path" -> file
    token_required: dict[str, str] = field(default_factory=dict)  # "owner/repo" -> token
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, Range header)
    commit: str = COMMIT  # X-Repo-Commit and the model info's `sha`
    listing: dict[str, list[str]] = field(default_factory=dict)  # "owner/repo" -> the names its info lists

    def serve(self, port: int = 0) -> http.server.ThreadingHTTPServer:
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                return None

            def _empty(self, status: int, error_code: str | None = None) -> None:
                self.send_response(status)
                if error_code:
                    self.send_header("X-Error-Code", error_code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _authorised(self, repo: str) -> bool:
                want = hub.token_required.get(repo)
                return want is None or self.headers.get("Authorization") == f"Bearer {want}"

            def _resolve(self):
                m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", self.path.split("?")[0])
                if not m:
                    return None, None
                return m.group(1), hub.files.get(f"{m.group(1)}/{m.group(3)}")

            def _headers(self, f: HubFile, length: int, status: int = 200, extra: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("X-Repo-Commit", hub.commit)
                self.send_header("ETag", f'"{f.etag()}"')
                if len(f.data) >= LFS_MIN:
                    self.send_header("X-Linked-Etag", f'"{f.etag()}"')
                    self.send_header("X-Linked-Size", str(len(f.data)))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(length))
                self.send_header("Content-Type", "application/octet-stream")
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()

            def do_HEAD(self):
                hub.requests.append(("HEAD", self.path, ""))
                repo, f = self._resolve()
                if repo and not self._authorised(repo):
                    return self._empty(401, "RepoNotFound")
                if f is None:
                    return self._empty(404, "EntryNotFound")
                self._headers(f, len(f.data))

            def do_GET(self):
                rng = self.headers.get("Range", "")
                hub.requests.append(("GET", self.path, rng))
                api = re.match(r"^/api/models/([^/]+/[^/]+)/revision/([^/?]+)", self.path)
                if api:
                    return self._model_info(api.group(1))
                repo, f = self._resolve()
                if repo and not self._authorised(repo):
                    return self._empty(401, "RepoNotFound")
                if f is None:
                    return self._empty(404, "EntryNotFound")
                start, end, status, extra = 0, len(f.data) - 1, 200, {}
                m = re.match(r"bytes=(\d+)-(\d*)", rng)
                if m:
                    start = int(m.group(1))
                    end = int(m.group(2)) if m.group(2) else end
                    status, extra = 206, {"Content-Range": f"bytes {start}-{end}/{len(f.data)}"}
                body = f.data[start : end + 1]
                self._headers(f, len(body), status, extra)
                if f.cut_once_at is not None and start < f.cut_once_at:
                    self.wfile.write(body[: f.cut_once_at - start])
                    self.wfile.flush()
                    f.cut_once_at = None
                    self.close_connection = True
                    self.connection.shutdown(2)  # the cut: the client sees a truncated body
                    return
                step = 64 * 1024 if f.slow else len(body) or 1
                try:
                    for i in range(0, len(body), step):
                        self.wfile.write(body[i : i + step])
                        if f.slow:
                            self.wfile.flush()
                            time.sleep(0.05)
                except (BrokenPipeError, ConnectionResetError):  # the client went away (Ctrl-C): its business
                    self.close_connection = True

            def _model_info(self, repo: str) -> None:
                if not self._authorised(repo):
                    return self._empty(401, "RepoNotFound")
                names = hub.listing.get(repo) or [k[len(repo) + 1 :] for k in hub.files if k.startswith(repo + "/")]
                if not names:
                    return self._empty(404, "RepoNotFound")
                body = json.dumps(
                    {"id": repo, "modelId": repo, "sha": hub.commit, "siblings": [{"rfilename": n} for n in names]}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server
