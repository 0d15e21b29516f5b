"""genforge: self-hosted content generation that tells the truth about what it generated."""

import os as _os

__version__ = "0.1.0"

# onnxruntime (Piper's runtime, also imported by diffusers/transformers when installed) sends telemetry and
# writes a device id under ~/.cache/Microsoft at import unless this is set before it is imported; every
# genforge process (server, CLI, engine workers, tests) imports this package first.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
