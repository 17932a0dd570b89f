"""``mlfn check`` on requirements.txt: pip can read it, no worker conflict, the files it names
are published, mlfn can be found, and a name for every distribution the published app imports
(runtime/deploy/requirements.py maps imports to distributions)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runtime.deploy import files, requirements
from runtime.deploy.findings import Report

WHERE = "requirements.txt"
IDENTITY = re.compile(r"__(accountname|blobserviceuri|queueserviceuri|serviceuri)$", re.I)
# Where pip also looks when the app settings say so (the remote build honours them).
PIP_SETTINGS = ("PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_FIND_LINKS")


def check_requirements(
    app_dir: Path,
    package: files.Package,
    probed: dict[str, Any],
    settings: Mapping[str, str],
    report: Report,
) -> None:
    try:
        reqs = requirements.read(app_dir / WHERE)
    except (OSError, UnicodeDecodeError) as exc:
        report.add(WHERE, f"cannot be read: {exc}")
        return
    if not package.includes(WHERE):
        report.add(WHERE, "is left out by .funcignore; the remote build needs it")
    for line in reqs.unreadable:
        report.add(WHERE, f"pip cannot read the line {line!r}")
    for name, why in requirements.FORBIDDEN.items():
        if name in reqs.named:
            report.add(WHERE, f"remove {reqs.named[name]!r}: {why}")
    _check_files(app_dir, package, reqs, report)
    _check_mlfn_source(reqs, settings, report)

    vendored = (app_dir / "runtime" / "__init__.py").is_file()
    # A runtime/ folder carried by the app is mlfn's: its needs are mlfn's run-time ones.
    own = [f for f in package.files if not (vendored and f.startswith("runtime/"))]
    imported = requirements.imported_modules(app_dir, own, keep={"runtime"})
    needed: dict[str, str] = {}
    for module, source in imported.items():
        if module.split(".")[0] == "runtime":
            continue
        if not requirements.installed(module):
            report.notes.append(
                f"{source} imports {module}, which is not installed here, so which distribution "
                "provides it is not checked: install the requirements and run mlfn check again"
            )
            continue
        needed.setdefault(requirements.distribution_of(module), f"{source} imports {module}")
    if any(m.split(".")[0] == "runtime" for m in imported):
        if vendored:
            for dist in requirements.mlfn_run_time():
                needed.setdefault(dist, "the runtime/ folder (mlfn) needs it")
        else:
            needed.setdefault("mlfn", "the app imports runtime (mlfn)")
        _runtime_extras(probed, settings, needed)
    covered = requirements.with_dependencies(reqs.extras)
    if probed["functions"]:
        covered.add("azure-functions")  # the platform provides it
    for dist, why in sorted(needed.items()):
        if dist not in covered:
            report.add(WHERE, f"does not name {dist} ({why})")


def _check_files(
    app_dir: Path, package: files.Package, reqs: requirements.Requirements, report: Report
) -> None:
    for line in reqs.named.values():
        path = line.split("[", 1)[0].split(" ", 1)[0]
        if not path.endswith(".whl") or "://" in path:
            continue
        wheel = (app_dir / path).resolve()
        inside = wheel.is_relative_to(app_dir)
        if not wheel.is_file():
            report.add(WHERE, f"{path} does not exist")
        elif not inside or not package.includes(wheel.relative_to(app_dir).as_posix()):
            report.add(WHERE, f"{path} is not in the published package, so pip cannot find it")


def _check_mlfn_source(
    reqs: requirements.Requirements, settings: Mapping[str, str], report: Report
) -> None:
    """mlfn is not on PyPI: a plain ``mlfn==X`` installs only where pip is told of an index or
    a folder that has it."""
    line = reqs.named.get("mlfn")
    if line is None or ".whl" in line or "://" in line or " @ " in line:
        return
    if reqs.index_options or any(settings.get(name) for name in PIP_SETTINGS):
        return
    report.add(
        WHERE,
        f"{line!r}: mlfn is not on PyPI, so the remote build cannot install it; ship its wheel "
        "(mlfn init --wheel FILE puts it in wheels/ and names it here) or point "
        "PIP_EXTRA_INDEX_URL at an index that has it",
    )


def _runtime_extras(
    probed: dict[str, Any], settings: Mapping[str, str], needed: dict[str, str]
) -> None:
    """mlfn's optional dependencies this app's settings and models make necessary."""
    if any(IDENTITY.search(key) for key in settings):
        needed.setdefault("azure-identity", "identity-based connections (X__accountName ...)")
    store = settings.get("MLFN_MODEL_STORE", "")
    for model in probed["models"]:
        uri = str(model["uri"])
        relative = "://" not in uri and not uri.startswith(("/", "./", "../"))
        if uri.startswith("s3://") or (relative and store.startswith("s3://")):
            needed.setdefault("boto3", f"endpoint {model['endpoint']} reads its model from S3")
