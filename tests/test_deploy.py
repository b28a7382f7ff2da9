"""The deployment files stay valid: hadolint on the Dockerfile, kubernetes-validate on the
manifests, promtool on the Prometheus config and alert rules (with their unit tests), and
the dashboard and alerts reference only metrics the dispatcher exports.

A missing tool skips its check on a laptop and fails it under CI=true (`.ci/run` installs
them all).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from dispatcher import metrics
from dispatcher.settings import ENV_PREFIX, Settings
from run.cli import build_parser
from tests.tooling import require_tool

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
PROM = DEPLOY / "prometheus"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
# The oldest Kubernetes the manifests are meant for, and the newest the tool knows.
K8S_VERSIONS = ("1.28.0", "latest")
# Metrics of other exporters that the alert rules may use, besides our own and `up`.
FOREIGN_METRICS = {"up", "kube_deployment_status_replicas_unavailable"}


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    yaml = pytest.importorskip("yaml", reason="PyYAML comes with kubernetes-validate")
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def setting_names() -> set[str]:
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields}


def default(setting: str) -> Any:
    """A setting's default, whatever this machine's environment says."""
    return Settings.model_fields[setting].default


# ---- Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    hadolint = require_tool("hadolint")
    result = run(hadolint, "--failure-threshold", "style", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines()]
    assert re.search(r"^FROM python:3\.\d+-slim", text, re.M), "a slim Python base"
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0"), "runs as a non-root user"
    assert user[-1].split(":")[0].isdigit(), "numeric, so runAsNonRoot can verify it"
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert lines[-1] == 'CMD ["dispatcher", "serve"]'
    assert "DISPATCHER_HOST=0.0.0.0" in text

    def first(prefix: str) -> int:
        return next(i for i, line in enumerate(lines) if line.startswith(prefix))

    deps = first('RUN python -c "import tomllib')
    assert first("COPY pyproject.toml") < deps < first("COPY dispatcher"), (
        "dependencies are installed in a layer of their own, before the code is copied"
    )
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored, "the build context is an allow-list"
    for needed in ("pyproject.toml", "README.md", "migrations/", "dispatcher/", "api/", "run/"):
        assert f"!{needed}" in ignored, f"{needed} must reach the build context"


# ---- Kubernetes ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_pass_kubernetes_validate(version: str) -> None:
    validate = require_tool("kubernetes-validate")
    pinned = [] if version == "latest" else ["-k", version]
    result = run(validate, "--strict", *pinned, *map(str, MANIFESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout + result.stderr


def _objects() -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in MANIFESTS:
        for doc in load_yaml_documents(path):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def _containers(objects: dict[tuple[str, str], dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for (kind, _), doc in objects.items():
        if kind in ("Deployment", "Job"):
            yield from doc["spec"]["template"]["spec"]["containers"]


def test_kubernetes_manifests_fit_together() -> None:
    objects = _objects()
    for wanted in [
        ("Deployment", "dispatcher-api"),
        ("Deployment", "dispatcher-worker"),
        ("Service", "dispatcher-api"),
        ("HorizontalPodAutoscaler", "dispatcher-api"),
        ("HorizontalPodAutoscaler", "dispatcher-worker"),
        ("PodDisruptionBudget", "dispatcher-api"),
        ("PodDisruptionBudget", "dispatcher-worker"),
        ("ConfigMap", "dispatcher-config"),
        ("Secret", "dispatcher-secrets"),
        ("Job", "dispatcher-migrate"),
    ]:
        assert wanted in objects, f"missing {wanted}"
    known = setting_names()
    for kind, field in (("ConfigMap", "data"), ("Secret", "stringData")):
        for (k, _), doc in objects.items():
            if k == kind:
                unknown = set(doc[field]) - known
                assert not unknown, f"{kind} sets variables no setting reads: {unknown}"
    for name, port in (
        ("dispatcher-api", default("port")),
        ("dispatcher-worker", default("metrics_port")),
    ):
        pod = objects[("Deployment", name)]["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = container[probe]["httpGet"]
            assert get["path"] == path and get["port"] in ports, f"{name} {probe}"
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
        assert port in ports.values()
        selector = objects[("Deployment", name)]["spec"]["selector"]["matchLabels"]
        assert objects[("PodDisruptionBudget", name)]["spec"]["selector"]["matchLabels"] == (
            selector
        )
        assert objects[("HorizontalPodAutoscaler", name)]["spec"]["scaleTargetRef"]["name"] == name
    parser = build_parser()
    for container in _containers(objects):
        parser.parse_args(container["command"][1:])  # a real subcommand (exits if not)
        assert container["command"][0] == "dispatcher"
    listed = load_yaml_documents(K8S / "kustomization.yaml")[0]["resources"]
    assert all((K8S / name).is_file() for name in listed)


# ---- Prometheus ----------------------------------------------------------------------------


def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    promtool = require_tool("promtool")
    checked = run(promtool, "check", "rules", "alerts.yml", cwd=PROM)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run(promtool, "test", "rules", "alerts.test.yml", cwd=PROM)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_prometheus_config_passes_promtool() -> None:
    promtool = require_tool("promtool")
    result = run(promtool, "check", "config", "prometheus.yml", cwd=PROM)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- metric names in PromQL ----------------------------------------------------------------

_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "inf", "nan",
}  # fmt: skip


def exported_series() -> set[str]:
    """Every sample name /metrics can show for our metrics (`_total`, `_bucket`, ...)."""
    names: set[str] = set()
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            for family in obj.collect():
                names |= {s.name for s in family.samples}
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: no strings, matchers, ranges, groupings, calls."""
    text = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', "", text)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    found = set()
    for m in re.finditer(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()", text):
        if m.group(1) not in _PROMQL_WORDS:
            found.add(m.group(1))
    return found


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{job=~"x.*"}[$__rate_interval])))'
        " / on(job) group_left b_total > bool 1e3 unless absent(up == 1)"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "up"}


def _panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from _panels(panel.get("panels", []))


def test_dashboard_references_only_exported_metrics_and_shows_them_all() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    exported = exported_series()
    panels = list(_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    used: set[str] = set()
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, f"{panel['title']}: no metric in {target['expr']}"
            unknown = names - exported - {"up"}
            assert not unknown, f"{panel['title']}: not exported: {unknown}"
            used |= names
    families = {n.removesuffix("_bucket").removesuffix("_total") for n in used}
    for spec_metric in (
        "webhook_events_ingested",
        "webhook_delivery_attempts",
        "webhook_delivery_attempt_duration_seconds",
        "webhook_event_delivery_latency_seconds",
        "webhook_deliveries_pending",
        "webhook_oldest_pending_age_seconds",
        "webhook_dead_letters",
        "webhook_endpoints",
    ):
        assert spec_metric in families, f"the dashboard does not show {spec_metric}"


def test_alert_rules_reference_only_exported_metrics() -> None:
    exported = exported_series()
    groups = load_yaml_documents(PROM / "alerts.yml")[0]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {r["alert"] for r in rules} >= {
        "WebhookOldestPendingTooOld",
        "WebhookDeadLettersIncreasing",
        "WebhookHighFailureRatio",
        "WebhookNoWorkerClaiming",
        "WebhookDispatcherDown",
    }
    for rule in rules:
        unknown = metric_names(rule["expr"]) - exported - FOREIGN_METRICS
        assert not unknown, f"{rule['alert']}: not exported: {unknown}"


# ---- compose -------------------------------------------------------------------------------


def test_compose_file_fits_the_code() -> None:
    (compose,) = load_yaml_documents(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert {"postgres", "migrate", "api", "worker", "prometheus"} <= set(services)
    known = setting_names()
    parser = build_parser()
    for name in ("migrate", "api", "worker"):
        service = services[name]
        command = service["command"]
        assert command[0] == "dispatcher"
        parser.parse_args(command[1:])
        unknown = {k for k in service["environment"] if k.startswith(ENV_PREFIX)} - known
        assert not unknown, f"{name} sets variables no setting reads: {unknown}"
    assert services["api"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"compose mounts a missing {source}"
    scrape = load_yaml_documents(PROM / "prometheus.yml")[0]["scrape_configs"]
    ports = {j["job_name"]: j["dns_sd_configs"][0]["port"] for j in scrape if "dns_sd_configs" in j}
    assert ports == {
        "dispatcher-api": default("port"),
        "dispatcher-worker": default("metrics_port"),
    }


def test_readme_links_the_operations_guide() -> None:
    assert (DEPLOY / "README.md").is_file()
    assert "deploy/README.md" in (ROOT / "README.md").read_text()
