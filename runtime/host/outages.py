"""What the local host's listeners know of their storage accounts: one account that is down is
said once, with what waits for it, and once when it is back, however many listeners (queues,
blob containers) use it and however often they retry."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from runtime.storage import clients

log = logging.getLogger("mlfn.host")

RETRY_S = 5  # how often a listener tries an account that is down again

STORAGE_HINT = (
    "is the storage emulator running? npx azurite --skipApiVersionCheck; or serve HTTP only "
    "with --no-queues"
)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def unreachable_storage(exc: BaseException) -> bool:
    """A storage account that does not answer (not one that refuses: a wrong key or identity
    is an error of its own, with its own message)."""
    return clients.unreachable(exc) or isinstance(exc, OSError)


def refused_by_storage(exc: BaseException) -> bool:
    """A storage account that refuses whatever is asked of it: a key or identity it does not
    accept (401, 403) or a service that fails (5xx). Any other answer (404, 409, 412 when
    another host took a receipt, 400) is about the one blob or queue asked for, and is that
    one's warning: counted as the account's, it would be said down and back on every scan
    and hide the warning."""
    status = clients.http_status(exc)
    return status is not None and (status in (401, 403) or 500 <= status <= 599)


@dataclass
class _Account:
    triggers: set[str] = field(default_factory=set)  # "queue", "blob": what waits for it
    cause: str = ""  # "unreachable" or "refused ...", empty while it works
    failing: set[str] = field(default_factory=set)  # the services (addresses) failing now
    where: str = ""


class StorageOutages:
    """Shared by every listener of one host (all on its event loop: no lock)."""

    def __init__(self) -> None:
        self._accounts: dict[str, _Account] = {}

    def watch(self, setting: str, trigger: str) -> None:
        """A listener of kind ``trigger`` ("queue", "blob") uses the account of ``setting``."""
        self._accounts.setdefault(setting, _Account()).triggers.add(trigger)

    def failed(self, setting: str, address: str, exc: BaseException) -> bool:
        """Note a failure of the service at ``address``; False if it is not the account's
        (the caller says it itself)."""
        if unreachable_storage(exc):
            cause, detail = "unreachable", ""
        elif refused_by_storage(exc):
            cause = f"refused ({getattr(exc, 'status_code', None) or 'an error'})"
            detail = f": {first_line(exc)}"
        else:
            return False
        account = self._accounts.setdefault(setting, _Account())
        account.failing.add(address)
        if account.cause != cause:
            account.cause, account.where = cause, address
            waiting = " and ".join(sorted(account.triggers)) or "its"
            hint = f" ({STORAGE_HINT})" if cause == "unreachable" else ""
            log.warning(
                "storage at %s (%s) %s%s: %s triggers wait for it; retrying every %ds%s",
                address, setting, cause, detail, waiting, RETRY_S, hint,
            )  # fmt: skip
        return True

    def worked(self, setting: str, address: str) -> None:
        """The service at ``address`` answered: the account is back once all of its do."""
        account = self._accounts.get(setting)
        if account is None or not account.cause:
            return
        account.failing.discard(address)
        if not account.failing:
            log.info(
                "storage at %s (%s) answers again: its triggers resume", account.where, setting
            )
            account.cause = ""
