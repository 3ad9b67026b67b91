"""provenance.package_versions: the versions a record names, optional kernel libraries included."""

from __future__ import annotations

from importlib import metadata

from grokbench import provenance

OPTIONAL = ("transformers", "flash-linear-attention", "fla-core", "mamba-ssm", "causal-conv1d", "triton")


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def test_optional_kernel_libraries_are_recorded_version_or_null():
    versions = provenance.package_versions()
    for name in OPTIONAL:
        assert name in versions, name
        assert versions[name] == _installed(name), name
    assert versions["torch"] and versions["python"]


def test_a_missing_package_is_null(monkeypatch):
    monkeypatch.setattr(provenance, "PACKAGES", (*provenance.PACKAGES, "no-such-package-grokbench"))
    assert provenance.package_versions()["no-such-package-grokbench"] is None
