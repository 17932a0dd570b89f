"""``mlfn check`` on the endpoints' model references: a file exists and is in the published
package; a pinned sha256 matches the file, or the store where it can be reached."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from runtime.deploy import files
from runtime.deploy.findings import Report


def check_models(
    app_dir: Path,
    package: files.Package,
    probed: dict[str, Any],
    settings: Mapping[str, str],
    report: Report,
    fetch: bool,
) -> None:
    from runtime.config import Settings
    from runtime.errors import ConfigError, MlfnError
    from runtime.model_store import locate, resolve_uri

    try:
        config = Settings.from_mapping(settings)
    except ConfigError as exc:
        report.add("settings", exc.message)
        return
    for model in probed["models"]:
        where = f"endpoint {model['endpoint']}"
        try:
            uri = resolve_uri(model["uri"], config, app_dir)
        except ConfigError as exc:
            report.add(where, f"model {model['uri']!r}: {exc.message}")
            continue
        if uri.startswith(("file:", "/")):
            path = Path(unquote(urlsplit(uri).path))
            if not path.is_file():
                report.add(where, f"model file {path} does not exist")
                continue
            inside = _inside(path, app_dir)
            if not inside or not package.includes(path.resolve().relative_to(app_dir).as_posix()):
                report.add(where, f"model file {path} is not in the published package")
            if model["sha256"] and _sha256(path) != model["sha256"]:
                report.add(where, f"model file {path} does not have the pinned sha256")
            continue
        if not model["sha256"] or not fetch:
            continue
        try:
            digest = _remote_sha256(locate(uri, config))
        except MlfnError as exc:
            report.notes.append(f"{where}: pinned digest not checked ({exc.message})")
            continue
        if digest != model["sha256"]:
            report.add(where, f"the model at {model['uri']} does not have the pinned sha256")


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except ValueError:
        return False
    return True


def _sha256(path: Path) -> str:
    from runtime.digest import sha256_file

    return sha256_file(path)


def _remote_sha256(source: Any) -> str:
    """The digest of the object in its store, downloaded through the same store code that
    serves it (into a temporary file: the SDKs want a seekable stream to download in parallel)."""
    digest = hashlib.sha256()
    with tempfile.TemporaryFile() as spool:
        source.download(spool)
        spool.seek(0)
        while chunk := spool.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def referenced_files(
    app_dir: Path, probed: dict[str, Any], settings: Mapping[str, str]
) -> set[str]:
    """The model files in the app folder that endpoints name, as paths relative to it (those a
    reference cannot be resolved for have their own finding above)."""
    from runtime.config import Settings
    from runtime.errors import ConfigError
    from runtime.model_store import resolve_uri

    try:
        config = Settings.from_mapping(settings)
    except ConfigError:
        return set()
    found: set[str] = set()
    for model in probed["models"]:
        try:
            uri = resolve_uri(model["uri"], config, app_dir)
        except ConfigError:
            continue
        if uri.startswith(("file:", "/")):
            path = Path(unquote(urlsplit(uri).path))
            if _inside(path, app_dir):
                found.add(path.resolve().relative_to(app_dir).as_posix())
    return found
