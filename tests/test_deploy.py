"""The deployment files under ``deploy/`` parse, and name only real settings, paths and modules."""

from __future__ import annotations

import importlib
import importlib.util
import re
import secrets
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from fastapi_tenancy import TenancyConfig
from fastapi_tenancy.health import health_router

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
# Variables the deployment sets that are not TenancyConfig fields: gunicorn's worker count.
OTHER_VARIABLES = {"WEB_CONCURRENCY"}


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return document


def manifests() -> list[dict[str, Any]]:
    return [doc for path in KUBERNETES for doc in yaml.safe_load_all(path.read_text()) if doc]


def containers() -> list[dict[str, Any]]:
    found = []
    for manifest in manifests():
        spec = manifest.get("spec", {})
        pod = spec.get("template", {}).get("spec", {})
        found.extend(pod.get("containers", []))
    return found


def assert_real_variable(name: str) -> None:
    if name in OTHER_VARIABLES:
        return
    assert name.startswith("TENANCY_"), name
    field = name.removeprefix("TENANCY_").lower()
    assert field in TenancyConfig.model_fields, f"{name} is not a TenancyConfig setting"


def assert_real_command(command: list[str]) -> None:
    """The program exists in the image and what it runs exists in the repository."""
    program, *args = command
    if program == "gunicorn":
        module, _, factory = args[0].partition(":")
        assert callable(getattr(importlib.import_module(module), factory.removesuffix("()")))
    elif program == "python":
        assert args[0] == "-m"
        assert importlib.util.find_spec(args[1]) is not None, args[1]
    elif program == "fastapi-tenancy":
        config = args[args.index("--config") + 1]
        assert (ROOT / config).is_file(), config
    else:
        pytest.fail(f"unexpected command {command}")


def test_compose_gates_every_service_on_healthy_dependencies() -> None:
    services = compose()["services"]
    assert {"app", "worker", "migrate", "postgres", "redis"} <= set(services)
    for name in ("app", "postgres", "redis"):
        assert "healthcheck" in services[name], name
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            expected = "service_completed_successfully" if dependency == "migrate" else None
            assert condition["condition"] == (expected or "service_healthy"), (name, dependency)
    assert "/health/ready" in " ".join(services["app"]["healthcheck"]["test"])


def test_compose_sets_real_settings_and_runs_real_commands() -> None:
    services = compose()["services"]
    for name in ("app", "worker", "migrate"):
        service = services[name]
        for variable in service["environment"]:
            assert_real_variable(variable)
        assert_real_command(service["command"])
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"


def test_dockerfile_copies_paths_that_exist() -> None:
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            *sources, _destination = shlex.split(line)[1:]
            for source in sources:
                assert (ROOT / source).exists(), source


def test_kubernetes_probes_hit_the_health_router() -> None:
    routes = {route.path for route in health_router().routes}  # type: ignore[attr-defined]
    app = next(c for c in containers() if c["name"] == "app")
    assert app["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert app["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert {"/health/live", "/health/ready"} <= routes


def test_kubernetes_manifests_set_real_settings_and_run_real_commands() -> None:
    kinds = [manifest["kind"] for manifest in manifests()]
    assert sorted(kinds) == ["ConfigMap", "Deployment", "Deployment", "Job", "Service"]
    config_map = next(m for m in manifests() if m["kind"] == "ConfigMap")
    for variable in config_map["data"]:
        assert_real_variable(variable)
    for container in containers():
        assert_real_command(container["command"])
        for variable in container.get("env", []):
            assert_real_variable(variable["name"])
        assert container["envFrom"] == [{"configMapRef": {"name": "fastapi-tenancy"}}]


def test_gunicorn_config_names_the_uvicorn_worker_class() -> None:
    text = (DEPLOY / "gunicorn.conf.py").read_text()
    assert re.search(r'worker_class = "uvicorn_worker\.UvicornWorker"', text)


def test_shutdown_deadlines_nest_inside_the_server_and_orchestrator_grace_periods() -> None:
    # The app's own deadline ends first, then gunicorn's, then the orchestrator's kill.
    text = (DEPLOY / "gunicorn.conf.py").read_text()
    match = re.search(r"^graceful_timeout = (\d+)$", text, re.MULTILINE)
    assert match is not None
    graceful = int(match.group(1))
    defaults = TenancyConfig.model_fields
    assert defaults["audit_flush_timeout"].default < defaults["shutdown_timeout"].default
    assert defaults["shutdown_timeout"].default < graceful
    app = next(m for m in manifests() if m["kind"] == "Deployment" and "api" in str(m))
    assert graceful < app["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert graceful < int(compose()["services"]["app"]["stop_grace_period"].removesuffix("s"))


def test_traefik_compose_publishes_routes_with_real_settings() -> None:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.traefik.yml").read_text())
    services = document["services"]
    assert {"traefik", "redis", "app", "worker", "migrate", "postgres"} <= set(services)
    for name in ("app", "worker", "migrate"):
        service = services[name]
        for variable in service["environment"]:
            assert_real_variable(variable)
        assert_real_command(service["command"])
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            expected = "service_completed_successfully" if dependency == "migrate" else None
            assert condition["condition"] == (expected or "service_healthy"), (name, dependency)
    env = services["app"]["environment"]
    assert env["TENANCY_EDGE_ENABLED"] == "true"
    # Traefik reads the root key and Redis database the app writes to, and hears of changes.
    traefik = " ".join(services["traefik"]["command"])
    assert f"--providers.redis.rootKey={env['TENANCY_EDGE_ROOT_KEY']}" in traefik
    assert "--providers.redis.db=0" in traefik
    assert env["TENANCY_REDIS_URL"].endswith("/0")
    assert f"certificatesResolvers.{env['TENANCY_EDGE_CERT_RESOLVER']}.acme" in traefik
    assert f"entryPoints.{env['TENANCY_EDGE_ENTRYPOINTS']}.address" in traefik
    assert "--notify-keyspace-events" in services["redis"]["command"]
    # The service the routers point at is the app, on the port gunicorn binds.
    assert env["TENANCY_EDGE_SERVICE_URLS"] == "http://app:8000"
    assert "8000" in services["app"]["expose"]
    # Every TENANCY_* value parses as a config (with a stand-in for the exported secret).
    settings = {
        name.removeprefix("TENANCY_").lower(): value
        for name, value in env.items()
        if name.startswith("TENANCY_")
    }
    settings["jwt_secret"] = secrets.token_urlsafe(48)
    settings["domain_suffix"] = "example.com"
    settings["tenant_metadata"] = None
    TenancyConfig(**settings)
