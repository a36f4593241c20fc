"""Real provenance made in the tests: a C2PA certificate chain and signed files (c2pa-python), and the
Stable Diffusion watermark embedded by `invisible-watermark` the way the reference pipelines do it."""

from __future__ import annotations

import datetime
import io

import numpy as np
from PIL import Image

AI_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def make_certificate_chain() -> tuple[bytes, bytes, bytes]:
    """A root CA and a signing certificate it issued (ES256), as C2PA wants them.

    Returns:
        (chain PEM: signer then root, the signer's private key PEM, the root PEM for a trust list).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common_name: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "deepfake-detector tests"),
            ]
        )

    now = datetime.datetime.now(datetime.timezone.utc)
    usage = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = (
        x509.CertificateBuilder()
        .subject_name(name("Test Root CA"))
        .issuer_name(name("Test Root CA"))
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**{**usage, "key_cert_sign": True, "crl_sign": True}), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    signer_key = ec.generate_private_key(ec.SECP256R1())
    signer = (
        x509.CertificateBuilder()
        .subject_name(name("Test Generator Signer"))
        .issuer_name(root.subject)
        .public_key(signer_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**{**usage, "digital_signature": True}), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(signer_key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
        )
        .sign(root_key, hashes.SHA256())
    )

    def pem(certificate) -> bytes:
        return certificate.public_bytes(serialization.Encoding.PEM)

    key = signer_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem(signer) + pem(root), key, pem(root)


def sign_c2pa(
    data: bytes, mime_type: str, chain: tuple[bytes, bytes, bytes], *, source_type: str = AI_SOURCE_TYPE
) -> bytes:
    """``data`` with a C2PA manifest whose creation action declares ``source_type``."""
    import c2pa

    certificates, key, _ = chain
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, certificates, key, None))
    manifest = {
        "claim_generator_info": [{"name": "test-image-generator", "version": "1.0"}],
        "title": "generated",
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {"actions": [{"action": "c2pa.created", "digitalSourceType": source_type}]},
            }
        ],
    }
    output = io.BytesIO()
    with c2pa.Builder(manifest) as builder:
        builder.sign(signer, mime_type, io.BytesIO(data), output)
    return output.getvalue()


def change_jpeg_pixels(data: bytes) -> bytes:
    """The same JPEG with one byte of its last scan's entropy-coded data changed: the picture still
    decodes, slightly different, and every hash over the content now fails."""
    start = data.rindex(b"\xff\xda")  # the last start-of-scan marker
    changed = bytearray(data)
    for position in range((start + len(data)) // 2, len(data) - 2):
        value = changed[position]
        if value not in (0xFE, 0xFF) and changed[position - 1] != 0xFF and value ^ 0x01 != 0xFF:
            changed[position] = value ^ 0x01
            return bytes(changed)
    raise AssertionError("no byte to change in the scan data")


def sd_watermark(rgb: np.ndarray, bits: tuple[int, ...]) -> Image.Image:
    """``rgb`` marked as CompVis' and Stability's scripts do: BGR into `WatermarkEncoder`, "dwtDct"."""
    from imwatermark import WatermarkEncoder

    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", list(bits))
    marked = encoder.encode(np.ascontiguousarray(rgb[:, :, ::-1]), "dwtDct")
    return Image.fromarray(np.ascontiguousarray(marked[:, :, ::-1]))
