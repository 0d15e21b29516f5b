"""Content Credentials (C2PA): this instance's signing key, signed manifests on artifacts, and verdicts.

On first use a local root CA and a signing certificate are made with `cryptography` (EC P-256, ES256; the
leaf is X.509 v3 with keyUsage digitalSignature, extendedKeyUsage emailProtection and key identifiers, as the
C2PA reference library requires; it refuses a self-signed signer). They live in DATA_DIR/credentials, the private
keys in a mode-0600 keystore. PNG and WAV artifacts get an embedded manifest signed offline with `c2pa-python` (no
timestamp server). Text has no C2PA container: it gets the same manifest as JSON with a detached ES256
signature over it (a sidecar kept with its record). `export-ca` hands the root to whoever should trust us.

Verdicts of `genforge verify`: valid (intact, signed by a key of this instance's CA), tampered (a manifest is
there but validation fails), foreign (intact, signed by another CA), unsigned (no manifest).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import io
import json
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genforge import __version__
from genforge.errors import CredentialsFailed
from genforge.media.private import private_dir

if TYPE_CHECKING:
    from genforge.engines.base import ResolvedModel

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
ASSERTION = "org.genforge.provenance"
SIDECAR_FORMAT = "genforge-credentials/1: C2PA manifest JSON with a detached ES256 signature"
EMBEDDED = ("image/png", "audio/wav", "video/mp4")  # formats that carry the manifest inside the file
VERDICTS = ("valid", "tampered", "foreign", "unsigned")
# No thumbnail: the reference library would embed a JPEG of the image (a third more bytes for a face).
_BUILD_SETTINGS = {"builder": {"thumbnail": {"enabled": False}}}


def canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class Signed:
    data: bytes  # the artifact as it will be stored
    extra: dict[str, Any] = field(default_factory=dict)  # what the record keeps: credentials (and a text's sidecar)


@dataclass
class Verdict:
    word: str  # one of VERDICTS
    detail: str
    manifest: dict[str, Any] | None = None  # the active manifest as the reader reports it
    label: str | None = None


class Credentials:
    def __init__(self, data_dir: Path, enabled: bool = True):
        self.dir = Path(data_dir) / "credentials"
        self.enabled = enabled

    # --- keys ------------------------------------------------------------------------------------------
    # One keystore file (mode 0600, in a 0700 directory): the root CA's certificate and key, and the signing
    # certificate and key, as PEM. One file is created atomically, so a half-made set is never used.
    @property
    def keystore(self) -> Path:
        return self.dir / "keystore.json"

    def ensure(self) -> None:
        """Make the root CA and the signing certificate once; when two processes race, the first set wins."""
        if self.keystore.is_file():
            return
        private_dir(self.dir)  # and the data dir above it, when this makes it
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".keystore-")  # mkstemp: mode 0600
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(_make_keys(), f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            # Atomic, and never replaces a keystore another process made first: its keys are the instance's.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, self.keystore)
        finally:
            os.unlink(tmp)

    def _keys(self) -> dict[str, str]:
        self.ensure()
        return json.loads(self.keystore.read_text())

    def _signer_material(self) -> tuple[bytes, bytes, str]:
        """(chain PEM leaf + root, leaf private key PEM, leaf certificate sha256)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization

        keys = self._keys()
        leaf_pem, key_pem = keys["signer_certificate"].encode(), keys["signer_key"].encode()
        serialization.load_pem_private_key(key_pem, password=None)  # a broken key fails here, clearly
        leaf = x509.load_pem_x509_certificate(leaf_pem)
        return leaf_pem + keys["root_certificate"].encode(), key_pem, leaf.fingerprint(hashes.SHA256()).hex()

    def root_pem(self) -> bytes:
        return self._keys()["root_certificate"].encode()

    # --- signing -----------------------------------------------------------------------------------------
    def manifest(
        self,
        *,
        label: str,
        content_id: str,
        content_type: str,
        model: ResolvedModel,
        params: dict[str, Any],
        inputs: list[dict[str, Any]] | None = None,
        identity: dict[str, Any] | None = None,
        checks: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The manifest definition every artifact gets (PNG, WAV embedded; text as a sidecar)."""
        agent = {"name": "genforge", "version": __version__}
        model_facts: dict[str, Any] = {"name": model.name, "engine": model.engine, "sha256": model.sha256}
        provenance: dict[str, Any] = {
            "content_id": content_id,
            "content_type": content_type,
            "model": model_facts,
            "seed": params.get("seed"),
            "params_sha256": hashlib.sha256(canonical(params)).hexdigest(),
        }
        if model.source:
            model_facts["source"] = model.source
        if inputs:  # what it was made from (img2img, a mask): content ids or uploads, each with its sha256
            provenance["inputs"] = inputs
        if identity:  # a persona's face, measured on this picture
            provenance["identity"] = identity
        provenance.update(checks or {})  # what the output was checked against (a narration's listen-back)
        return {
            "label": label,
            "title": f"genforge {content_type} {content_id}",
            "claim_generator_info": [agent],
            "assertions": [
                {
                    "label": "c2pa.actions",
                    "data": {
                        "actions": [
                            {
                                "action": "c2pa.created",
                                "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                                "softwareAgent": agent,
                            }
                        ]
                    },
                },
                {"label": ASSERTION, "data": provenance},
            ],
        }

    def sign(
        self,
        *,
        content_id: str,
        content_type: str,
        media_type: str,
        data: bytes,
        model: ResolvedModel,
        params: dict[str, Any],
        inputs: list[dict[str, Any]] | None = None,
        identity: dict[str, Any] | None = None,
        checks: dict[str, Any] | None = None,
    ) -> Signed:
        """The artifact with its Content Credentials and what the record says about them. Raises
        CredentialsFailed: an artifact that should be signed is never stored unsigned."""
        if not self.enabled:
            return Signed(data, {"credentials": {"signed": False, "reason": "GENFORGE_CREDENTIALS=off"}})
        label = f"urn:c2pa:{uuid.uuid4()}"
        definition = self.manifest(
            label=label,
            content_id=content_id,
            content_type=content_type,
            model=model,
            params=params,
            inputs=inputs,
            identity=identity,
            checks=checks,
        )
        try:
            chain, key, fingerprint = self._signer_material()
            if media_type in EMBEDDED:
                signed, extra = self._embed(definition, media_type, data, chain, key), {}
            else:
                signed, extra = data, {"credentials_sidecar": self._sidecar(definition, media_type, data, chain, key)}
        except Exception as exc:  # cryptography's and c2pa's errors alike: the generation fails, typed
            raise CredentialsFailed(f"signing the Content Credentials failed: {type(exc).__name__}: {exc}") from exc
        info = {
            "signed": True,
            "format": "c2pa" if media_type in EMBEDDED else "sidecar",
            "manifest_label": label,
            "signer_sha256": fingerprint,
            "digital_source_type": TRAINED_ALGORITHMIC_MEDIA,
        }
        return Signed(signed, {"credentials": info, **extra})

    def _embed(self, definition: dict[str, Any], media_type: str, data: bytes, chain: bytes, key: bytes) -> bytes:
        import c2pa

        info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, key, None)  # None: no timestamp server
        context = c2pa.Context.from_dict(_BUILD_SETTINGS)
        dest = io.BytesIO()
        with c2pa.Signer.from_info(info) as signer, c2pa.Builder(definition, context=context) as builder:
            builder.sign(signer, media_type, io.BytesIO(data), dest)
        return dest.getvalue()

    def _sidecar(
        self, definition: dict[str, Any], media_type: str, data: bytes, chain: bytes, key: bytes
    ) -> dict[str, Any]:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        manifest = {**definition, "asset": {"media_type": media_type, "sha256": hashlib.sha256(data).hexdigest()}}
        private = serialization.load_pem_private_key(key, password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey):  # _make_keys makes EC P-256 keys only
            raise CredentialsFailed(f"the signing key is a {type(private).__name__}, not an EC key for ES256")
        signature = private.sign(canonical(manifest), ec.ECDSA(hashes.SHA256()))
        pems = [p + "-----END CERTIFICATE-----\n" for p in chain.decode().split("-----END CERTIFICATE-----\n") if p]
        return {
            "format": SIDECAR_FORMAT,
            "manifest": manifest,
            "signature": {
                "alg": "ES256",
                "signed": "the manifest as canonical JSON (keys sorted, no spaces, UTF-8)",
                "value": base64.b64encode(signature).decode(),
                "certificate_chain": pems,
            },
        }

    # --- reading and verifying ----------------------------------------------------------------------------
    def read(self, data: bytes, media_type: str | None = None) -> Verdict:
        """The verdict on an embedded manifest, checked against this instance's root as the only trust anchor."""
        import c2pa

        context = c2pa.Context.from_dict(
            {"trust": {"trust_anchors": self.root_pem().decode()}, "verify": {"verify_trust": True}}
        )
        try:
            reader = c2pa.Reader(media_type or "", io.BytesIO(data), context=context)
        except c2pa.C2paError.ManifestNotFound:
            return Verdict("unsigned", "the file carries no Content Credentials")
        except c2pa.C2paError as exc:  # a manifest (or what was one) that cannot be read back
            return Verdict("tampered", f"the Content Credentials cannot be read: {exc}")
        with reader:
            state = reader.get_validation_state()
            store = json.loads(reader.json())
        label = store.get("active_manifest")
        manifest = (store.get("manifests") or {}).get(label)
        failures = [s.get("code") for s in store.get("validation_status") or []]
        if state == "Trusted":
            return Verdict("valid", "intact, signed by this genforge instance", manifest, label)
        if state == "Valid":
            who = (manifest or {}).get("signature_info", {}).get("issuer")
            return Verdict(
                "foreign", f"intact, but signed by another key ({who}; {', '.join(failures)})", manifest, label
            )
        return Verdict(
            "tampered", f"validation failed: {', '.join(f for f in failures if f) or state}", manifest, label
        )

    def check_sidecar(self, sidecar: dict[str, Any], data: bytes) -> Verdict:
        """The verdict on a text artifact's sidecar: our chain, a good signature, and the file's own sha256."""
        from cryptography import x509
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        manifest, sig = sidecar["manifest"], sidecar["signature"]
        leaf = x509.load_pem_x509_certificate(sig["certificate_chain"][0].encode())
        root = x509.load_pem_x509_certificate(self.root_pem())
        leaf_key, root_key = leaf.public_key(), root.public_key()
        if not isinstance(root_key, ec.EllipticCurvePublicKey):  # _make_keys makes an EC P-256 root only
            raise CredentialsFailed(f"this instance's root CA has a {type(root_key).__name__}, not an EC key")
        if not isinstance(leaf_key, ec.EllipticCurvePublicKey):  # the sidecar says ES256: its key must be EC
            return Verdict("tampered", f"the sidecar's signer has a {type(leaf_key).__name__}, not ES256", manifest)
        try:
            leaf_key.verify(base64.b64decode(sig["value"]), canonical(manifest), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return Verdict("tampered", "the sidecar's signature does not match its manifest", manifest)
        if manifest["asset"]["sha256"] != hashlib.sha256(data).hexdigest():
            return Verdict("tampered", "the file's sha256 is not the one its credentials sign", manifest)
        hash_algorithm = leaf.signature_hash_algorithm
        if hash_algorithm is None:  # signed without a hash (Ed25519, Ed448): not by our ES256 root
            return Verdict("foreign", "intact, but signed by another key", manifest)
        try:
            root_key.verify(leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(hash_algorithm))
        except InvalidSignature:
            return Verdict("foreign", "intact, but signed by another key", manifest)
        return Verdict("valid", "intact, signed by this genforge instance (sidecar credentials)", manifest)


def describe(
    creds: Credentials, content_id: str, extra: dict[str, Any], data: bytes, media_type: str
) -> dict[str, Any]:
    """GET /api/v1/content/{id}/credentials: the sidecar of a text, or an embedded manifest as read back."""
    from genforge.errors import NotFound

    info = extra.get("credentials") or {}
    if not info.get("signed"):
        reason = info.get("reason") or "it was made before genforge signed artifacts"
        raise NotFound(f"content {content_id} has no Content Credentials ({reason})", field="id")
    if "credentials_sidecar" in extra:
        verdict = creds.check_sidecar(extra["credentials_sidecar"], data)
        return {
            "content_id": content_id,
            "verdict": verdict.word,
            "detail": verdict.detail,
            **extra["credentials_sidecar"],
        }
    verdict = creds.read(data, media_type)
    return {
        "content_id": content_id,
        "format": "c2pa (embedded in the file)",
        "verdict": verdict.word,
        "detail": verdict.detail,
        "manifest_label": verdict.label,
        "manifest": verdict.manifest,
    }


def _make_keys() -> dict[str, str]:
    """Root CA (10 years) and signing certificate (5 years), EC P-256, as PEM strings."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "genforge"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        )

    def usage(**on: bool) -> x509.KeyUsage:
        flags = (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        )
        return x509.KeyUsage(**{f: on.get(f, False) for f in flags})

    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    instance = uuid.uuid4().hex[:8]
    root_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = (
        x509.CertificateBuilder()
        .subject_name(name(f"genforge root CA {instance}"))
        .issuer_name(name(f"genforge root CA {instance}"))
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name(f"genforge signer {instance}"))
        .issuer_name(root.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1825))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    pem, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8

    def key_pem(key: ec.EllipticCurvePrivateKey) -> str:
        return key.private_bytes(pem, pkcs8, serialization.NoEncryption()).decode()

    return {
        "root_certificate": root.public_bytes(pem).decode(),
        "root_key": key_pem(root_key),
        "signer_certificate": leaf.public_bytes(pem).decode(),
        "signer_key": key_pem(leaf_key),
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
    }
