"""``mlfn kube``: the manifests, parsed back, say what the app's own triggers say."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

# The test extra's offline validator (kubeconform is not packaged on PyPI, Debian or npm):
# imported plainly, so a broken install fails here rather than skipping.
import kubernetes_validate
import pytest
import yaml

from runtime.deploy.kube import BASE_IMAGE, MANIFESTS, render_kube, write_kube
from runtime.errors import DeployError
from runtime.host.metadata import FunctionInfo, index_app

ROOT = Path(__file__).resolve().parents[2]
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")

PLAIN_APP = """
import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.route(route="score", methods=["POST"])
def score(req: func.HttpRequest) -> str:
    return "scored"


@app.route(route="healthz", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def healthz(req: func.HttpRequest) -> str:
    return "ok"


@app.queue_trigger(arg_name="msg", queue_name="%ORDERS_QUEUE%", connection="AzureWebJobsStorage")
def orders(msg: func.QueueMessage) -> None:
    pass


@app.function_name("audit_log")
@app.queue_trigger(arg_name="msg", queue_name="audit", connection="AuditStorage")
def audit(msg: func.QueueMessage) -> None:
    pass
"""

PLAIN_ENV = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "AuditStorage": "DefaultEndpointsProtocol=https;AccountName=audit;AccountKey=a2V5",
    "ORDERS_QUEUE": "orders-in",
    "MLFN_MODEL_STORE": "az://models",
}


@pytest.fixture
def plain_app(tmp_path: Path, isolated_imports: None) -> Path:
    app_dir = tmp_path / "shop_app"
    app_dir.mkdir()
    (app_dir / "function_app.py").write_text(PLAIN_APP)
    (app_dir / "requirements.txt").write_text("azure-functions\n")
    (app_dir / ".funcignore").write_text("__pycache__\n/local-only\ndocs/\n")
    host = {"version": "2.0", "extensions": {"queues": {"batchSize": 8}}}
    (app_dir / "host.json").write_text(json.dumps(host))
    return app_dir


def _docs(manifests: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(manifests) if d is not None]


def _of(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _env(deployment: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in _container(deployment)["env"]}


def _selected(deployment: dict[str, Any]) -> list[str]:
    """The functions the Functions host of the Deployment runs, in order."""
    env = _env(deployment)
    prefix = "AzureFunctionsJobHost__functions__"
    return [env[f"{prefix}{i}"] for i in range(len(env)) if f"{prefix}{i}" in env]


def _check_against_triggers(
    docs: list[dict[str, Any]], functions: list[FunctionInfo], env: dict[str, str], length: str
) -> None:
    deployments = _of(docs, "Deployment")
    scaled = _of(docs, "ScaledObject")
    for doc in docs:
        assert DNS_LABEL.fullmatch(doc["metadata"]["name"]), doc["metadata"]["name"]

    queue_functions = [f for f in functions if f.trigger.type == "queueTrigger"]
    assert len(scaled) == len(queue_functions)
    targets = [s["spec"]["scaleTargetRef"]["name"] for s in scaled.values()]
    assert len(set(targets)) == len(targets), "KEDA refuses two ScaledObjects on one workload"
    for f in queue_functions:
        (so,) = [s for s in scaled.values() if _selected(deployments[s["spec"]["scaleTargetRef"]["name"]])[0] == f.name]  # fmt: skip
        assert so["spec"]["minReplicaCount"] == 0
        (trigger,) = so["spec"]["triggers"]
        assert trigger["type"] == "azure-queue"
        queue = re.sub(r"%([^%]+)%", lambda m: env[m.group(1)], f.trigger.raw["queueName"])
        assert trigger["metadata"] == {
            "queueName": queue,
            "queueLength": length,
            "connectionFromEnv": f.trigger.connection,
        }
        assert "replicas" not in deployments[so["spec"]["scaleTargetRef"]["name"]]["spec"]

    http = [f.name for f in functions if f.trigger.type == "httpTrigger"]
    (http_deployment,) = [d for d in deployments.values() if _selected(d) == http]
    service = _of(docs, "Service")[http_deployment["metadata"]["name"]]
    pod_labels = http_deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    for deployment in deployments.values():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        container = _container(deployment)
        assert container["ports"] == [{"name": "http", "containerPort": 80}]
        secret = container["envFrom"][0]["secretRef"]["name"]
        assert secret.endswith("-settings")
    # One app to the Functions host: the pods share keys and locks in the storage account.
    assert len({_env(d)["AzureFunctionsWebHost__hostId"] for d in deployments.values()}) == 1
    # Every function runs in exactly one Deployment, but for the probe routes that ride along.
    probes = {"health_live", "health_ready", "healthz"}
    primary = [n for d in deployments.values() for n in _selected(d) if n not in probes]
    assert sorted(primary) == sorted(f.name for f in functions if f.name not in probes)


def test_the_repository_app_gets_a_scaled_object_per_queue_trigger(isolated_imports: None) -> None:
    env = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    functions = index_app(ROOT)
    # Named, not left to the checkout's folder name (main, fresh, ...).
    files = render_kube(ROOT, "registry.example/mlfn:1", env=env, name="main", functions=functions)
    docs = _docs(files.manifests)

    _check_against_triggers(docs, functions, env, "16")  # host.json batchSize
    assert {f.name for f in functions if f.trigger.type == "queueTrigger"} == {
        "iris_queue",
        "diabetes_queue",
    }
    http = _of(docs, "Deployment")["main-http"]
    container = _container(http)
    assert container["image"] == "registry.example/mlfn:1"
    assert container["livenessProbe"]["httpGet"] == {"path": "/api/v2/health/live", "port": "http"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/api/v2/health/ready"
    # The queue pods run the health routes too, so that their probes have something to ask.
    assert _selected(_of(docs, "Deployment")["main-iris-queue"]) == [
        "iris_queue",
        "health_live",
        "health_ready",
    ]
    assert files.dockerfile.splitlines()[1] == f"FROM {BASE_IMAGE}"
    ignore = files.dockerignore.splitlines()
    assert ignore.index("*") < ignore.index("!function_app.py") < ignore.index("**/.env*")
    assert not [line for line in ignore if line.startswith("!local.settings")]


def test_a_plain_v2_app_with_a_setting_named_queue(plain_app: Path) -> None:
    out = plain_app / "k8s"
    functions = index_app(plain_app)
    written = write_kube(plain_app, out, "shop:2", env=PLAIN_ENV, functions=functions)
    assert written == [plain_app / "Dockerfile", plain_app / ".dockerignore", out / MANIFESTS]
    text = (out / MANIFESTS).read_text()
    docs = _docs(text)

    _check_against_triggers(docs, functions, PLAIN_ENV, "8")
    deployments = _of(docs, "Deployment")
    assert sorted(deployments) == ["shop-app-audit-log", "shop-app-http", "shop-app-orders"]
    orders = _of(docs, "ScaledObject")["shop-app-orders"]
    assert orders["spec"]["triggers"][0]["metadata"]["queueName"] == "orders-in"
    # The host resolves %ORDERS_QUEUE% again in the pod: it must find what KEDA watches.
    assert _env(deployments["shop-app-orders"])["ORDERS_QUEUE"] == "orders-in"
    probe = _container(deployments["shop-app-http"])["readinessProbe"]["httpGet"]
    assert probe == {"path": "/api/healthz", "port": "http"}
    assert _selected(deployments["shop-app-orders"]) == ["orders", "healthz"]
    # The Secret to create is named, with its keys and none of their values.
    assert "kubectl create secret generic shop-app-settings" in text
    for key in ("AzureWebJobsStorage", "AuditStorage", "MLFN_MODEL_STORE"):
        assert f"--from-literal={key}='...'" in text
    assert "AccountKey" not in text and "UseDevelopmentStorage" not in text
    assert (plain_app / "Dockerfile").read_text().startswith("# Generated by mlfn kube")
    # Its own files it writes again.
    assert write_kube(plain_app, out, "shop:3", env=PLAIN_ENV, functions=functions) == written


def test_a_queue_name_from_an_unset_setting_is_refused_naming_it(plain_app: Path) -> None:
    env = {k: v for k, v in PLAIN_ENV.items() if k != "ORDERS_QUEUE"}
    with pytest.raises(DeployError, match=r"function orders .* app setting ORDERS_QUEUE"):
        render_kube(plain_app, env=env)


def test_an_identity_based_connection_scales_with_workload_identity(plain_app: Path) -> None:
    env = {k: v for k, v in PLAIN_ENV.items() if k != "AzureWebJobsStorage"}
    env |= {"AzureWebJobsStorage__accountName": "shopdata", "AzureWebJobsStorage__clientId": "c1"}
    docs = _docs(render_kube(plain_app, env=env).manifests)

    trigger = _of(docs, "ScaledObject")["shop-app-orders"]["spec"]["triggers"][0]
    assert trigger["metadata"] == {
        "queueName": "orders-in",
        "queueLength": "8",
        "accountName": "shopdata",
    }
    auth = _of(docs, "TriggerAuthentication")[trigger["authenticationRef"]["name"]]
    assert auth["spec"] == {"podIdentity": {"provider": "azure-workload", "identityId": "c1"}}
    # The connection-string queue is unchanged.
    audit = _of(docs, "ScaledObject")["shop-app-audit-log"]["spec"]["triggers"][0]
    assert audit["metadata"]["connectionFromEnv"] == "AuditStorage"
    (account,) = _of(docs, "ServiceAccount").values()
    assert account["metadata"]["annotations"] == {"azure.workload.identity/client-id": "c1"}
    for deployment in _of(docs, "Deployment").values():
        pod = deployment["spec"]["template"]
        assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
        assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
        assert _env(deployment)["AzureWebJobsStorage__accountName"] == "shopdata"


def test_an_identity_without_a_client_id_is_refused_naming_the_setting(plain_app: Path) -> None:
    env = {k: v for k, v in PLAIN_ENV.items() if k != "AzureWebJobsStorage"}
    env["AzureWebJobsStorage__accountName"] = "shopdata"
    with pytest.raises(DeployError, match="AzureWebJobsStorage__clientId"):
        render_kube(plain_app, env=env)


def test_names_that_are_not_dns_labels_are_refused(plain_app: Path) -> None:
    with pytest.raises(DeployError, match="'Shop App!'"):
        render_kube(plain_app, env=PLAIN_ENV, name="Shop App!")


def test_a_hand_written_dockerfile_is_kept(plain_app: Path) -> None:
    (plain_app / "Dockerfile").write_text("FROM python:3.11\n")
    with pytest.raises(DeployError, match="Dockerfile exists"):
        write_kube(plain_app, plain_app / "k8s", env=PLAIN_ENV)
    assert (plain_app / "Dockerfile").read_text() == "FROM python:3.11\n"


def test_core_objects_validate_against_kubernetes_schemas(plain_app: Path) -> None:
    """The Deployments and Service against the Kubernetes OpenAPI schemas, offline. The KEDA
    objects (custom resources) have no schema here and are checked field by field above."""
    docs = _docs(render_kube(plain_app, env=PLAIN_ENV).manifests)
    version = kubernetes_validate.latest_version()
    core = [d for d in docs if d["apiVersion"] in ("v1", "apps/v1")]
    assert {d["kind"] for d in core} == {"Deployment", "Service"}
    for doc in core:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_image_installs_from_the_app_folder_with_its_wheels(plain_app: Path) -> None:
    functions = index_app(plain_app)
    without = render_kube(plain_app, "r/app:1", env=PLAIN_ENV, functions=functions).dockerfile
    assert "COPY wheels/" not in without
    (plain_app / "wheels").mkdir()
    (plain_app / "wheels" / "mlfn-0.1.0-py3-none-any.whl").write_bytes(b"")
    with_wheels = render_kube(plain_app, "r/app:1", env=PLAIN_ENV, functions=functions).dockerfile
    lines = with_wheels.splitlines()
    # requirements.txt may name ./wheels/mlfn-...whl: the wheel is there before pip runs.
    assert lines.index("COPY wheels/ ./wheels/") < lines.index(
        "RUN pip install --no-cache-dir -r requirements.txt"
    )
    assert "WORKDIR /home/site/wwwroot" in lines


EVENTS_APP = """
import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.route(route="score", methods=["POST"])
def score(req: func.HttpRequest) -> str:
    return "scored"


@app.blob_trigger(arg_name="blob", path="inbox/{name}", connection="AzureWebJobsStorage",
                  source=func.BlobSource.EVENT_GRID)
def inbox(blob: func.InputStream) -> None:
    pass
"""


def test_event_grid_blob_triggers_get_a_service_that_says_event_grid_must_reach_it(
    plain_app: Path,
) -> None:
    (plain_app / "function_app.py").write_text(EVENTS_APP)
    manifests = render_kube(plain_app, env=PLAIN_ENV).manifests
    docs = _docs(manifests)
    services = _of(docs, "Service")
    other = _of(docs, "Deployment")["shop-app-other"]
    assert _selected(other) == ["inbox"]
    events = services["shop-app-other"]
    pod_labels = other["spec"]["template"]["metadata"]["labels"]
    assert events["spec"]["selector"].items() <= pod_labels.items()
    assert events["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http"}]
    before = manifests[
        : manifests.index("---\napiVersion: v1\nkind: Service\nmetadata:\n  name: shop-app-other\n")
    ]
    comment = "\n".join(line for line in before.splitlines()[-6:] if line.startswith("#"))
    assert "Event Grid must reach this Service" in comment
    assert "/runtime/webhooks/blobs?functionName=Host.Functions.inbox" in comment

    version = kubernetes_validate.latest_version()
    for doc in docs:
        if doc["apiVersion"] in ("v1", "apps/v1"):
            kubernetes_validate.validate(doc, version, strict=True)
