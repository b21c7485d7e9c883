"""Tests of isyb_dask.pipeline.security and the --tls cluster: per-run certificates, file
modes, and that the scheduler refuses plain-TCP and foreign-certificate clients."""

from __future__ import annotations

import stat
from urllib.parse import urlparse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from distributed import Client

from isyb_dask.pipeline.cluster import ClusterSpec, open_client
from isyb_dask.pipeline.security import ROLES, generate_certificates, make_security


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_certificates_are_per_run_signed_and_private(tmp_path):
    files = generate_certificates(tmp_path / "run1")
    assert _mode(files.directory) == 0o700
    ca = x509.load_pem_x509_certificate(files.ca_file.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    serials = set()
    for role in ROLES:
        assert _mode(files.keys[role]) == 0o600, role
        cert = x509.load_pem_x509_certificate(files.certs[role].read_bytes())
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        # signed by the run's CA (raises InvalidSignature otherwise)
        ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                               ec.ECDSA(cert.signature_hash_algorithm))
        assert cert.issuer == ca.subject
        serials.add(cert.serial_number)
    assert len(serials) == 3
    # the CA's private key is never written: only 3 role keys are on disk
    assert sorted(p.name for p in files.directory.glob("*key*")) == [
        "client-key.pem", "scheduler-key.pem", "worker-key.pem"]
    assert all("PRIVATE KEY" not in p.read_text() for p in files.directory.glob("*.pem")
               if "key" not in p.name)

    # a second run gets a different CA; re-generating in place keeps the modes
    other = generate_certificates(tmp_path / "run2")
    assert other.ca_file.read_bytes() != files.ca_file.read_bytes()
    again = generate_certificates(tmp_path / "run1")
    assert _mode(again.keys["worker"]) == 0o600
    assert again.ca_file.read_bytes() != ca.public_bytes(serialization.Encoding.PEM)


def test_security_requires_encryption(tmp_path):
    sec = make_security(generate_certificates(tmp_path))
    assert sec.require_encryption
    for role in ROLES:
        conf = sec.get_tls_config_for_role(role)
        assert conf["cert"].endswith(f"{role}.pem") and conf["key"].endswith(f"{role}-key.pem")


def _double(x: int) -> int:
    return 2 * x


def test_tls_cluster_refuses_plain_and_foreign_clients(tmp_path):
    spec = ClusterSpec(workers=1, tls=True, memory_limit="1GiB", dashboard_address="127.0.0.1:0")
    with open_client(spec, tmp_path / "run") as client:
        addr = client.scheduler.address
        parsed = urlparse(addr)
        assert parsed.scheme == "tls" and parsed.hostname == "127.0.0.1"
        workers = client.run(lambda dask_worker: dask_worker.address)
        assert all(a.startswith("tls://127.0.0.1:") for a in workers)
        assert client.submit(_double, 21).result() == 42
        assert _mode(tmp_path / "run" / "tls" / "client-key.pem") == 0o600

        # plain TCP to the TLS port: refused
        with pytest.raises((OSError, TimeoutError)):
            Client(addr.replace("tls://", "tcp://"), timeout=3)
        # TLS with certificates of another run (another CA): refused
        foreign = make_security(generate_certificates(tmp_path / "other"))
        with pytest.raises((OSError, TimeoutError)):
            Client(addr, security=foreign, timeout=3)
