"""``mlfn check`` on requirements.txt: no worker conflict, and a name for every distribution the
published app imports (runtime/deploy/requirements.py maps imports to distributions)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runtime.deploy import files, requirements
from runtime.deploy.findings import Report

IDENTITY_SUFFIXES = ("__accountName", "__blobServiceUri", "__queueServiceUri", "__serviceUri")


def check_requirements(
    app_dir: Path,
    package: files.Package,
    probed: dict[str, Any],
    settings: Mapping[str, str],
    report: Report,
) -> None:
    where = "requirements.txt"
    named = requirements.named(app_dir / "requirements.txt")
    for name, why in requirements.FORBIDDEN.items():
        if name in named:
            report.add(where, f"remove {named[name]!r}: {why}")
    if not package.includes("requirements.txt"):
        report.add(where, "is left out by .funcignore; the remote build needs it")
    for line in named.values():
        if line.endswith(".whl") and "://" not in line:
            wheel = (app_dir / line).resolve()
            relative = wheel.relative_to(app_dir) if wheel.is_relative_to(app_dir) else None
            if not wheel.is_file():
                report.add(where, f"{line} does not exist")
            elif relative is None or not package.includes(relative.as_posix()):
                report.add(where, f"{line} is not in the published package, so pip cannot find it")
    if "mlfn" in named and not named["mlfn"].endswith(".whl") and "://" not in named["mlfn"]:
        report.notes.append(
            f"requirements.txt installs {named['mlfn']} from the package index; where mlfn is not "
            "there, ship its wheel in wheels/ (mlfn init --wheel FILE does) or set "
            "PIP_EXTRA_INDEX_URL"
        )
    vendored = (app_dir / "runtime" / "__init__.py").is_file()
    # A runtime/ folder carried by the app is mlfn's: its needs are mlfn's run-time ones.
    own = [f for f in package.files if not (vendored and f.startswith("runtime/"))]
    needed: dict[str, str] = {}
    for module, source in requirements.imported_modules(app_dir, own).items():
        needed.setdefault(requirements.distribution_of(module), f"{source} imports {module}")
    imports_runtime = any(
        m.split(".")[0] == "runtime"
        for m in requirements.imported_modules(app_dir, own, keep={"runtime"})
    )
    if imports_runtime and vendored:
        for dist in requirements.mlfn_run_time():
            needed.setdefault(dist, "the runtime/ folder (mlfn) needs it")
    elif imports_runtime:
        needed.setdefault("mlfn", "the app imports runtime (mlfn)")
    covered = requirements.with_dependencies(named)
    if probed["functions"]:
        covered.add("azure-functions")  # the platform provides it
    uses_identity = any(k.endswith(IDENTITY_SUFFIXES) for k in settings)
    if uses_identity:
        needed.setdefault("azure-identity", "identity-based connections (X__accountName ...)")
    for model in probed["models"]:
        if str(model["uri"]).startswith("s3://"):
            needed.setdefault("boto3", f"endpoint {model['endpoint']} reads its model from S3")
    for dist, why in sorted(needed.items()):
        extra_ok = dist in ("azure-identity", "boto3") and any(
            line.startswith("mlfn[") for line in named.values()
        )
        if dist not in covered and not extra_ok:
            report.add(where, f"does not name {dist} ({why})")
