"""``mlfn init DIR``: a new app folder that passes ``mlfn check`` and serves with ``mlfn serve``:
host.json, function_app.py, requirements.txt naming this mlfn, local settings for Azurite,
.funcignore, .gitignore, a README and one example endpoint with its model."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from string import Template
from urllib.parse import unquote, urlsplit

from runtime.config import Settings
from runtime.deploy import example_model
from runtime.errors import ScaffoldError
from runtime.version import package_version

WHEELS = "wheels"
EXAMPLE = "example"
EXAMPLE_MODEL = Path("models") / "example.onnx"
# template file -> the file it becomes in the new app
FILES = {
    "host.json": "host.json",
    "function_app.py.tmpl": "function_app.py",
    "requirements.txt.tmpl": "requirements.txt",
    "local.settings.json.tmpl": "local.settings.json",
    "funcignore": ".funcignore",
    "gitignore": ".gitignore",
    "README.md.tmpl": "README.md",
}


def app_templates() -> Path:
    """The ``app`` scaffold shipped with mlfn."""
    from runtime.scaffold import TEMPLATES_DIR

    return TEMPLATES_DIR / "app"


@dataclass
class NewApp:
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def installed_wheel() -> Path | None:
    """The wheel file this mlfn was installed from, when pip recorded one that still exists."""
    try:
        text = metadata.distribution("mlfn").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    info = json.loads(text) if text else {}
    url = str(info.get("url", ""))
    if "archive_info" not in info or not url.startswith("file:") or not url.endswith(".whl"):
        return None
    path = Path(unquote(urlsplit(url).path))
    return path if path.is_file() else None


def init_app(target: Path, with_example: bool = True, wheel: Path | None = None) -> NewApp:
    """Write a new app into ``target`` (created if missing; refused if it has any of the files
    already). mlfn is not on PyPI: the wheel it was installed from (or ``wheel``) is copied into
    ``wheels/`` and requirements.txt names that file, which the remote build installs."""
    made = NewApp()
    wheel = wheel or installed_wheel()
    ours = [*FILES.values(), "functions"]
    if wheel is not None:
        ours.append(f"{WHEELS}/{wheel.name}")
    if with_example:
        ours.append(EXAMPLE_MODEL.as_posix())
    clashes = [name for name in ours if (target / name).exists()]
    if clashes:
        raise ScaffoldError(f"{target} already has {', '.join(clashes)}: not overwriting")
    if wheel is not None:
        requirement = f"./{WHEELS}/{wheel.name}"
    else:
        version = package_version()
        requirement = f"mlfn=={version}" if version != "0" else "mlfn"
        made.notes.append(
            f"requirements.txt names {requirement}, which the remote build fetches from the "
            "package index; mlfn is not on PyPI, so build the wheel (pip wheel --no-deps "
            "PATH_TO_MLFN) and run mlfn init --wheel FILE, or point PIP_EXTRA_INDEX_URL at an "
            "index that has it"
        )
    templates = app_templates()
    values = {"mlfn_requirement": requirement, "app_name": target.resolve().name}
    target.mkdir(parents=True, exist_ok=True)
    for source, name in FILES.items():
        text = (templates / source).read_text()
        if source.endswith(".tmpl"):
            text = Template(text).substitute(values)
        (target / name).write_text(text)
        made.files.append(target / name)
    if wheel is not None:
        (target / WHEELS).mkdir(exist_ok=True)
        made.files.append(Path(shutil.copy2(wheel, target / WHEELS / wheel.name)))
    (target / "functions").mkdir()
    (target / "functions" / "__init__.py").write_text("")
    if with_example:
        made.files.extend(_example(target))
    return made


def _example(target: Path) -> list[Path]:
    from runtime.scaffold import render_tensor_endpoint

    model = target / EXAMPLE_MODEL
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_bytes(example_model.build())
    endpoint = render_tensor_endpoint(
        EXAMPLE, f"./{EXAMPLE_MODEL.as_posix()}", target, Settings.from_mapping({})
    )
    return [model, endpoint]
