"""The Kubernetes objects of an app, planned from its functions' bindings: Deployments that
each run some of the functions, the HTTP Service, and a KEDA ScaledObject per queue trigger
(with a TriggerAuthentication and a ServiceAccount when a connection is identity-based).
``runtime.deploy.kube`` writes them; see its docstring for the layout and why."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from runtime.config import (
    CONNECTION_PROPERTIES,
    STORAGE_SETTING,
    Connection,
    Settings,
    binding_expressions,
    connection,
)
from runtime.errors import ConfigError, DeployError
from runtime.host.metadata import FunctionInfo
from runtime.host.queue_options import QueueOptions
from runtime.host_json import HostConfig
from runtime.protocol.jobs import check_queue_name

PORT = 80  # the Functions host of the base image listens here
# Where the Functions host takes Event Grid's blob events (the blobs extension's webhook).
EVENT_GRID_PATH = "/runtime/webhooks/blobs"
QUEUE_HOST_SUFFIX = ".queue.core.windows.net"
HOST_ID = "AzureFunctionsWebHost__hostId"
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# Anonymous GET routes the probes may use, by how they end: Open Inference Protocol's first.
_LIVE = ("health/live", "healthz", "livez", "health")
_READY = ("health/ready", "readyz")
_STORE = Settings.variable("store_connection")


def dns_label(text: str, what: str) -> str:
    """``text`` as a Kubernetes name (a DNS-1123 label): lowercase, ``_`` and ``.`` as ``-``;
    anything else that is not a valid label is an error naming ``what`` it was derived from."""
    label = text.lower().replace("_", "-").replace(".", "-")
    if len(label) > 63 or not _LABEL.fullmatch(label):
        raise DeployError(
            f"{what} {text!r} gives the Kubernetes name {label!r}, which is not a DNS-1123 "
            "label (at most 63 lowercase letters, digits and '-', starting and ending with a "
            "letter or digit): choose another name"
        )
    return label


@dataclass(frozen=True)
class QueueScaler:
    """One queue trigger, as KEDA's ``azure-queue`` scaler watches it."""

    function: str
    component: str
    queue: str
    connection: Connection | None  # None: not set here; the Secret holds a connection string
    setting: str


class Manifests:
    """The Kubernetes objects of one app; ``documents`` builds them in the order to apply."""

    def __init__(self, app: str, image: str, env: Mapping[str, str], host: HostConfig) -> None:
        self.app = app
        self.image = image
        self.env = env
        self.route_prefix = host.route_prefix
        self.queue_length = QueueOptions.from_host(host).batch_size
        self.secret = f"{app}-settings"
        self.literal_env: dict[str, str] = {}  # settings the manifests fix, not the Secret
        self.connection_strings = {STORAGE_SETTING}  # settings the Secret must hold
        # Comment lines written above a document, by (kind, name).
        self.comments: dict[tuple[str, str], list[str]] = {}

    def documents(self, functions: Sequence[FunctionInfo]) -> list[dict[str, Any]]:
        if not functions:
            raise DeployError("the app has no functions: nothing to deploy")
        http = [f for f in functions if f.trigger.type == "httpTrigger"]
        queues = [self._queue(f) for f in functions if f.trigger.type == "queueTrigger"]
        other = [f for f in functions if f not in http and f.trigger.type != "queueTrigger"]
        live = _route_ending(http, _LIVE)
        ready = _route_ending(http, _READY) or live
        probes = list(dict.fromkeys(f.name for f in (live, ready) if f is not None))
        identity = self._identity([q.connection for q in queues])

        workloads: list[tuple[str, list[str], int | None]] = []  # component, functions, replicas
        if http:
            workloads.append(("http", [f.name for f in http], 1))
        # Probe functions ride along so the probes have a route in every pod; KEDA owns
        # the replicas of a queue's Deployment (a count here would fight it on every apply).
        workloads += [(q.component, [q.function, *probes], None) for q in queues]
        if other:
            workloads.append(("other", [f.name for f in other] + probes, 1))
        names = [f"{self.app}-{component}" for component, _, _ in workloads]
        for label in names:
            dns_label(label, "the Deployment name")
        if len(set(names)) != len(names):
            raise DeployError(f"two Deployments would share a name: {sorted(names)}")

        docs: list[dict[str, Any]] = []
        if identity is not None:
            docs.append(self._service_account(identity))
        for component, selected, replicas in workloads:
            docs.append(
                self._deployment(component, selected, replicas, live, ready, identity is not None)
            )
            if component == "http":
                docs.append(self._service("http"))
            elif component == "other" and (events := _event_grid(other)):
                docs.append(self._events_service(events))
        docs += [self._trigger_auth(c) for c in _identities(q.connection for q in queues)]
        docs += [self._scaled_object(q) for q in queues]
        return docs

    # --- reading the bindings -----------------------------------------------------------------

    def _queue(self, f: FunctionInfo) -> QueueScaler:
        where = f"the queue trigger of function {f.name}"
        raw = str(f.trigger.raw.get("queueName") or "")
        try:
            queue = binding_expressions.queue_name(raw, self.env)
        except ConfigError as exc:
            raise DeployError(
                f"{where} reads its queue name from app setting {exc.key} (%{exc.key}%), "
                "which is not set: set it (local.settings.json Values or the environment) "
                "so that the ScaledObject watches the queue the function listens to"
            ) from None
        # The pod's host reads the same settings again: they go in as written.
        for read in binding_expressions.settings_read(raw):
            key = binding_expressions.setting_key(read, self.env)
            assert key is not None  # queue_name has found every one
            self.literal_env[key] = self.env[key]
        try:
            check_queue_name(queue)
        except ValueError as exc:
            raise DeployError(f"{where}: {exc}") from None
        setting = f.trigger.connection
        try:
            conn = connection(setting, self.env)
        except ConfigError as exc:
            raise DeployError(f"{where}: {exc.message}") from None
        if conn is None or conn.identity is None:
            self.connection_strings.add(setting)
        return QueueScaler(f.name, dns_label(f.name, "the function name"), queue, conn, setting)

    def _identity(self, queue_connections: Sequence[Connection | None]) -> str | None:
        """The client id of the workload identity the pods need, when a connection (the
        host's, the model store's or a queue's) is identity-based; its ``SETTING__*``
        properties become the pods' environment."""
        try:
            host = connection(STORAGE_SETTING, self.env)
            # mlfn reads the store's plain value itself (an account URL is its older form);
            # only the SETTING__ form says which identity to give the pods.
            store = None if self.env.get(_STORE) else connection(_STORE, self.env)
        except ConfigError as exc:
            raise DeployError(exc.message) from None
        ids = set()
        for conn in _identities([host, store, *queue_connections]):
            assert conn.identity is not None
            if self.env.get(conn.setting, "").strip():  # an account URL: see storage_account
                raise DeployError(
                    f"{conn.setting} holds an account URL, which the Functions host does not "
                    f"read: set {conn.setting}__accountName and {conn.setting}__clientId instead"
                )
            if not conn.identity.client_id:
                raise DeployError(
                    f"{conn.setting} is an identity-based connection: on Kubernetes it needs "
                    f"{conn.setting}__clientId, the client id of the user-assigned managed "
                    "identity that workload identity federates with the pods' service account"
                )
            ids.add(conn.identity.client_id)
            wanted = {p.lower() for p in CONNECTION_PROPERTIES}
            prefix = f"{conn.setting.lower()}__"
            for key, value in self.env.items():
                if key.lower().startswith(prefix) and key[len(prefix) :].lower() in wanted:
                    self.literal_env[key] = value.strip()
        if len(ids) > 1:
            raise DeployError(
                f"identity-based connections name {len(ids)} client ids; the pods have one "
                "service account, so they must share one identity"
            )
        return ids.pop() if ids else None

    def secret_keys(self) -> list[str]:
        """The settings the Secret must hold: connection strings and the runtime's settings
        (those ``env`` sets), less what the manifests set themselves."""
        variables = [f.metadata["variable"].lower() for f in fields(Settings)]
        keys = self.connection_strings | {
            key
            for key in self.env
            if any(key.lower() == v or key.lower().startswith(f"{v}__") for v in variables)
        }
        fixed = set(self.literal_env) | {k.split("__")[0] for k in self.literal_env}
        return sorted(keys - fixed)

    # --- the objects --------------------------------------------------------------------------

    def _labels(self, component: str) -> dict[str, str]:
        return {"app.kubernetes.io/name": self.app, "app.kubernetes.io/component": component}

    def _path(self, f: FunctionInfo) -> str:
        return "/" + "/".join(p for p in (self.route_prefix, f.route.strip("/")) if p)

    def _deployment(
        self,
        component: str,
        selected: Sequence[str],
        replicas: int | None,
        live: FunctionInfo | None,
        ready: FunctionInfo | None,
        identity: bool,
    ) -> dict[str, Any]:
        # One host id for every pod (else each derives its own from its name), so that they
        # share function keys and locks in the storage account; the host allows 32 characters.
        env = {"FUNCTIONS_WORKER_RUNTIME": "python", HOST_ID: self.app[:32].rstrip("-")}
        env |= {f"AzureFunctionsJobHost__functions__{i}": n for i, n in enumerate(selected)}
        env |= dict(sorted(self.literal_env.items()))
        container: dict[str, Any] = {
            "name": "functions",
            "image": self.image,
            "ports": [{"name": "http", "containerPort": PORT}],
            "envFrom": [{"secretRef": {"name": self.secret}}],
            "env": [{"name": k, "value": v} for k, v in env.items()],
        }
        if live is not None:
            get = {"path": self._path(live), "port": "http"}
            # The host and the Python worker take a while to start; after that, 3 misses restart.
            container["startupProbe"] = {"httpGet": get, "periodSeconds": 2, "failureThreshold": 60}
            container["livenessProbe"] = {"httpGet": get, "periodSeconds": 20}
        if ready is not None:
            get = {"path": self._path(ready), "port": "http"}
            container["readinessProbe"] = {"httpGet": get, "periodSeconds": 10}
        labels = self._labels(component)
        pod: dict[str, Any] = {"containers": [container]}
        pod_labels = dict(labels)
        if identity:
            pod = {"serviceAccountName": self.app, **pod}
            pod_labels["azure.workload.identity/use"] = "true"
        spec: dict[str, Any] = {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": pod_labels}, "spec": pod},
        }
        if replicas is not None:
            spec = {"replicas": replicas, **spec}
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": f"{self.app}-{component}", "labels": labels},
            "spec": spec,
        }

    def _service(self, component: str) -> dict[str, Any]:
        labels = self._labels(component)
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"{self.app}-{component}", "labels": labels},
            "spec": {
                "selector": labels,
                "ports": [{"name": "http", "port": PORT, "targetPort": "http"}],
            },
        }

    def _events_service(self, events: Sequence[FunctionInfo]) -> dict[str, Any]:
        """The Service Event Grid's blob events must reach: an Event Grid blob trigger is not
        polled, so without it the functions never run."""
        service = self._service("other")
        name = service["metadata"]["name"]
        first = events[0].name
        self.comments[("Service", name)] = [
            f"Event Grid must reach this Service: the blob triggers of "
            f"{', '.join(f.name for f in events)} take source=EventGrid and are never polled.",
            "Route HTTPS from your ingress to it, and subscribe each container's BlobCreated "
            "events to",
            f"  https://HOST{EVENT_GRID_PATH}?functionName=Host.Functions.{first}&code=KEY",
            "(one subscription per function; KEY is the host's blobs_extension system key, in "
            "the azure-webjobs-secrets",
            "container of AzureWebJobsStorage). docs/kubernetes.md has the steps.",
        ]
        return service

    def _service_account(self, client_id: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": self.app,
                "labels": {"app.kubernetes.io/name": self.app},
                "annotations": {"azure.workload.identity/client-id": client_id},
            },
        }

    def _trigger_auth_name(self, conn: Connection) -> str:
        return dns_label(f"{self.app}-{conn.setting}", "the TriggerAuthentication name")

    def _trigger_auth(self, conn: Connection) -> dict[str, Any]:
        assert conn.identity is not None and conn.identity.client_id
        return {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "TriggerAuthentication",
            "metadata": {"name": self._trigger_auth_name(conn), "labels": self._labels("keda")},
            "spec": {
                "podIdentity": {"provider": "azure-workload", "identityId": conn.identity.client_id}
            },
        }

    def _scaled_object(self, q: QueueScaler) -> dict[str, Any]:
        metadata = {"queueName": q.queue, "queueLength": str(self.queue_length)}
        trigger: dict[str, Any] = {"type": "azure-queue", "metadata": metadata}
        if q.connection is None or q.connection.identity is None:
            metadata["connectionFromEnv"] = q.setting
        else:
            metadata["accountName"] = _account_name(q.connection)
            trigger["authenticationRef"] = {"name": self._trigger_auth_name(q.connection)}
        deployment = f"{self.app}-{q.component}"
        return {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {"name": deployment, "labels": self._labels(q.component)},
            "spec": {
                "scaleTargetRef": {"name": deployment},
                "minReplicaCount": 0,
                "triggers": [trigger],
            },
        }


def _route_ending(http: Sequence[FunctionInfo], endings: Sequence[str]) -> FunctionInfo | None:
    """The first anonymous GET route without parameters that ends with one of ``endings``."""
    usable = [
        f
        for f in http
        if f.auth_level == "ANONYMOUS"
        and (f.methods is None or "GET" in f.methods)
        and "{" not in f.route
    ]
    for ending in endings:
        for f in usable:
            route = f.route.strip("/").lower()
            if route == ending or route.endswith(f"/{ending}"):
                return f
    return None


def _event_grid(functions: Sequence[FunctionInfo]) -> list[FunctionInfo]:
    """The blob triggers among ``functions`` that Event Grid calls instead of the host polling."""
    return [
        f
        for f in functions
        if f.trigger.type == "blobTrigger"
        and str(f.trigger.raw.get("source", "")).lower() == "eventgrid"
    ]


def _identities(connections: Any) -> list[Connection]:
    """The identity-based connections among ``connections``, once each."""
    found: dict[str, Connection] = {}
    for conn in connections:
        if conn is not None and conn.identity is not None:
            found.setdefault(conn.setting, conn)
    return list(found.values())


def _account_name(conn: Connection) -> str:
    """The storage account KEDA's scaler addresses (public Azure cloud only)."""
    try:
        host = urlsplit(conn.url("queue")).hostname or ""
    except ConfigError as exc:
        raise DeployError(exc.message) from None
    if not host.endswith(QUEUE_HOST_SUFFIX):
        raise DeployError(
            f"{conn.setting}: queue endpoint {host!r} is not in Azure's public cloud; the "
            f"generated ScaledObject addresses accounts by name (*{QUEUE_HOST_SUFFIX})"
        )
    return host[: -len(QUEUE_HOST_SUFFIX)]
