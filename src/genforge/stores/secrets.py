"""Secrets at rest: a channel's password, a webhook's signing secret. They are encrypted (Fernet: AES-128-CBC with
HMAC-SHA256, from `cryptography`) with a key kept in the data dir (`secrets.key`, mode 0600), so a copy of the
database alone reveals none of them. The plaintext never leaves the process except to the network it is for."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from genforge.errors import CredentialsFailed
from genforge.media.private import open_private, private_dir

KEY_FILE = "secrets.key"


class SecretBox:
    """Encrypts and decrypts short secrets with the data dir's key (made on first use)."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / KEY_FILE
        self._fernet: Fernet | None = None
        self._lock = threading.Lock()

    def _key(self) -> Fernet:
        with self._lock:
            if self._fernet is None:
                if not self.path.exists():
                    private_dir(self.path.parent)
                    tmp = self.path.with_name(f".{KEY_FILE}.{os.getpid()}")
                    with open_private(tmp, "wb") as f:
                        f.write(Fernet.generate_key())
                    try:
                        os.link(tmp, self.path)  # first writer wins (several API processes on one data dir)
                    except FileExistsError:
                        pass
                    finally:
                        tmp.unlink()
                self._fernet = Fernet(self.path.read_bytes().strip())
            return self._fernet

    def seal(self, secret: str) -> bytes:
        return self._key().encrypt(secret.encode())

    def open(self, token: bytes) -> str:
        try:
            return self._key().decrypt(token).decode()
        except InvalidToken:
            raise CredentialsFailed(
                f"a stored secret cannot be decrypted with {self.path}",
                hint="The data dir's secrets.key was replaced or lost: register the channel or webhook again.",
            ) from None
