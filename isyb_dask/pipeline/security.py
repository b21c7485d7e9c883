"""Per-run TLS certificates for the Dask scheduler, workers and client.

``isyb run --tls`` encrypts and mutually authenticates every connection between the client,
the scheduler and the workers. For each run a fresh private certificate authority (CA) is
created in memory; it signs one certificate per role (``scheduler``, ``worker``,
``client``) and is then discarded: its private key is never written, so no further
certificate can be issued for the run. Only the CA certificate, the three role
certificates and their private keys are written, under ``<run_dir>/tls/`` (directory mode
0700, key files mode 0600, created with that mode so they are never readable by others
even briefly). Batch jobs read the same files through the shared file system.

Keys are ECDSA P-256 (fast to generate; TLS 1.2+). Certificates are valid for
``valid_days`` (default 7) so a stale run directory cannot be reused for long.
"""

from __future__ import annotations

import datetime as _dt
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from distributed.security import Security

ROLES: tuple[str, ...] = ("scheduler", "worker", "client")
_NAME = "isyb-dask"


@dataclass(frozen=True)
class TLSFiles:
    """Paths of the certificate material of one run.

    Attributes
    ----------
    directory : Path
        ``<run_dir>/tls``.
    ca_file : Path
        CA certificate (PEM) trusted by every role.
    certs : dict of str to Path
        Role name to certificate (PEM).
    keys : dict of str to Path
        Role name to private key (PEM, mode 0600).
    """

    directory: Path
    ca_file: Path
    certs: dict[str, Path]
    keys: dict[str, Path]


def _write_private(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file created with ``mode`` (replacing any old file)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, mode)  # umask may have masked bits off


def generate_certificates(run_dir: Path, *, valid_days: int = 7) -> TLSFiles:
    """Create a throw-away CA and one signed certificate per role under ``run_dir/tls``.

    Parameters
    ----------
    run_dir : Path
        The run's directory (created if missing). Must be on a file system the batch
        jobs can read when workers run on other nodes.
    valid_days : int
        Validity of the certificates in days.

    Returns
    -------
    TLSFiles
        Paths of the written files.

    Raises
    ------
    ImportError
        If the ``cryptography`` package is not installed.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    tls_dir = Path(run_dir) / "tls"
    tls_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(tls_dir, 0o700)
    now = _dt.datetime.now(_dt.UTC) - _dt.timedelta(minutes=5)
    until = now + _dt.timedelta(days=valid_days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{_NAME} run CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = tls_dir / "ca.pem"
    _write_private(ca_file, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)

    certs: dict[str, Path] = {}
    keys: dict[str, Path] = {}
    for role in ROLES:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{_NAME}-{role}")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(f"{_NAME}-{role}")]), critical=False
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        certs[role] = tls_dir / f"{role}.pem"
        keys[role] = tls_dir / f"{role}-key.pem"
        _write_private(certs[role], cert.public_bytes(serialization.Encoding.PEM), 0o644)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_private(keys[role], key_pem, 0o600)
    del ca_key  # never written: no more certificates can be signed for this run
    return TLSFiles(directory=tls_dir, ca_file=ca_file, certs=certs, keys=keys)


def make_security(files: TLSFiles) -> Security:
    """Build distributed's :class:`~distributed.security.Security` from per-run files.

    Encryption is required (``require_encryption=True``): a plain ``tcp://`` connection
    is refused, and each side must present a certificate signed by the run's CA.

    Parameters
    ----------
    files : TLSFiles
        Output of :func:`generate_certificates`.

    Returns
    -------
    distributed.Security
        For the client, the scheduler and (through dask-jobqueue's ``security=``) the
        workers; it holds file paths only, so it can be turned into worker command-line
        options.
    """
    return Security(
        require_encryption=True,
        tls_min_version=ssl.TLSVersion.TLSv1_2,
        tls_ca_file=str(files.ca_file),
        tls_scheduler_cert=str(files.certs["scheduler"]),
        tls_scheduler_key=str(files.keys["scheduler"]),
        tls_worker_cert=str(files.certs["worker"]),
        tls_worker_key=str(files.keys["worker"]),
        tls_client_cert=str(files.certs["client"]),
        tls_client_key=str(files.keys["client"]),
    )


def run_security(run_dir: Path) -> Security:
    """Generate fresh certificates for a run and return the matching ``Security``.

    Parameters
    ----------
    run_dir : Path
        The run's directory; files go to ``run_dir/tls``.

    Returns
    -------
    distributed.Security
        See :func:`make_security`.
    """
    return make_security(generate_certificates(run_dir))
