"""Files that look like secrets: never packed, whatever ``.funcignore`` says.

One list, read by ``mlfn pack`` and ``spark-score --ship-app`` (runtime/deploy/files.py, which
leaves them out), ``mlfn check`` (which says so, and fails when ``func azure functionapp
publish``, which does not read this list, would upload them) and the ``.dockerignore`` that
``mlfn kube`` writes. Each pattern is a glob on one path component (``*`` only), compared
without case, so a match at any depth leaves out that file, or that folder and everything in it.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

# (glob on one path component, lowercase; what such a file is)
SECRETS: tuple[tuple[str, str], ...] = (
    (".env*", "a dotenv file"),
    ("*.env", "a dotenv file"),
    ("local.settings*.json*", "local settings (connection strings, keys)"),
    ("*.publishsettings", "a publish profile (deployment credentials)"),
    (".azure", "Azure CLI credentials and token caches"),
    ("msal_token_cache*", "an MSAL token cache"),
    ("msal_http_cache*", "an MSAL cache"),
    ("*.pem", "a private key or certificate"),
    ("*.key", "a private key"),
    ("*.pfx", "a certificate with its private key"),
    ("*.p12", "a certificate with its private key"),
    ("id_rsa*", "an SSH key"),
    ("id_dsa*", "an SSH key"),
    ("id_ecdsa*", "an SSH key"),
    ("id_ed25519*", "an SSH key"),
    (".ssh", "SSH keys"),
    (".aws", "AWS credentials"),
    (".kube", "Kubernetes credentials"),
    (".docker", "registry credentials"),
    (".netrc", "login credentials"),
    (".pypirc", "package index credentials"),
    (".git", "git history"),
)


def secret(relative: str) -> tuple[str, str] | None:
    """The part of ``relative`` (a POSIX path in the app) that looks like a secret, up to and
    including the first such component, and what it is; None when nothing does."""
    parts = relative.strip("/").split("/")
    for i, part in enumerate(parts):
        lowered = part.lower()
        for glob, what in SECRETS:
            if fnmatchcase(lowered, glob):
                return "/".join(parts[: i + 1]), what
    return None


def dockerignore_patterns() -> list[str]:
    """The same list as .dockerignore lines: ``**/`` reaches every depth, the root included,
    and a folder that matches takes its contents with it. Docker compares with case, so each
    glob is written in lowercase, as the files are usually named."""
    return [f"**/{glob}" for glob, _ in SECRETS]
