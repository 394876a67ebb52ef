"""Every service runs in Kubernetes the way the code expects (issue 14).

`make lint` validates deploy/k8s against the Kubernetes schemas (kubernetes-validate); schemas cannot
say that a service is missing, that its probe asks the wrong port, or that kustomize leaves a file
out. This reads the manifests and checks them against the code: each process under services/ has a
Deployment (listed in kustomization.yaml) whose readiness probe is gRPC health on the gRPC port its
settings default to, whose liveness probe is HTTP /healthz, and whose ports, Service, ConfigMap entries
and Prometheus scrape target agree. A new service without them fails here."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
# Deliberately not applied: it would replace real secrets with placeholders (kustomization.yaml).
NOT_RESOURCES = {"kustomization.yaml", "secret.example.yaml"}
SERVICES = sorted(path.parent.name for path in (ROOT / "services").glob("*/__main__.py"))


@functools.cache  # yaml is slow to parse; every test reads the same files
def manifests() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.load_all(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        if doc
    ]


def kind(name: str, of: str) -> dict[str, Any]:
    found = [doc for doc in manifests() if doc["kind"] == of and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"deploy/k8s needs exactly one {of} named {name}, found {len(found)}"
    return found[0]


def default_port(service: str, which: str) -> int:
    """The port the service's settings default to (`iam_grpc_port: int = 50051`)."""
    text = (ROOT / "services" / service / "settings.py").read_text()
    found = re.search(rf"\b{service}_{which}_port:\s*int\s*=\s*(\d+)", text)
    assert found, f"services/{service}/settings.py declares no {service}_{which}_port"
    return int(found.group(1))


def container(service: str) -> dict[str, Any]:
    containers = kind(service, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == [service]
    return dict(containers[0])


def test_the_service_list_comes_from_the_code() -> None:
    assert SERVICES == ["billing", "booking", "iam", "integrations", "jobs", "media", "notify"]


def test_kustomize_applies_every_manifest_and_only_those() -> None:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    on_disk = sorted(path.name for path in K8S.glob("*.yaml") if path.name not in NOT_RESOURCES)
    assert sorted(listed) == on_disk
    assert len(listed) == len(set(listed))


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_is_ready_by_grpc_health_and_alive_by_healthz(service: str) -> None:
    grpc, http = default_port(service, "grpc"), default_port(service, "http")
    spec = container(service)
    assert spec["command"] == ["python", "-m", f"services.{service}"]
    ports = {port["name"]: port["containerPort"] for port in spec["ports"]}
    assert ports == {"grpc": grpc, "http": http}
    # grpc.health.v1 turns SERVING only while database, migrations and NATS are good.
    assert spec["readinessProbe"]["grpc"]["port"] == grpc
    # Liveness must not restart every pod while the database is away: the process answering is enough.
    live = spec["livenessProbe"]["httpGet"]
    assert live["path"] == "/healthz" and live["port"] in ("http", http)


@pytest.mark.parametrize("service", SERVICES)
def test_ports_agree_across_configmap_service_and_scrape_config(service: str) -> None:
    grpc, http = default_port(service, "grpc"), default_port(service, "http")
    config = kind("cws-config", "ConfigMap")["data"]
    upper = service.upper()
    assert config[f"{upper}_GRPC_PORT"] == str(grpc)
    assert config[f"{upper}_HTTP_PORT"] == str(http)
    assert config[f"{upper}_GRPC_TARGET"] == f"{service}:{grpc}"
    ports = {p["name"]: p["port"] for p in kind(service, "Service")["spec"]["ports"]}
    assert ports == {"grpc": grpc, "http": http}
    pod = kind(service, "Deployment")["spec"]["template"]["metadata"]
    assert pod["annotations"]["prometheus.io/port"] == str(http)
    scrape = {job["job_name"]: job for job in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]}
    assert scrape[f"cws-{service}"]["static_configs"] == [{"targets": [f"{service}:{http}"]}]


def test_media_keeps_local_photos_on_one_volume_with_one_replica() -> None:
    # docs/media.md: with the local backend the photos live on the `media-uploads` volume at
    # ORDER_UPLOAD_ROOT, so one replica (ReadWriteOnce) replaced with Recreate.
    assert kind("cws-config", "ConfigMap")["data"]["ORDER_STORAGE_BACKEND"] == "local"
    deployment = kind("media", "Deployment")["spec"]
    assert deployment["replicas"] == 1 and deployment["strategy"] == {"type": "Recreate"}
    env = {item["name"]: item.get("value") for item in container("media")["env"]}
    mounts = {mount["name"]: mount["mountPath"] for mount in container("media")["volumeMounts"]}
    assert mounts["uploads"] == env["ORDER_UPLOAD_ROOT"]
    volumes = {volume["name"]: volume for volume in deployment["template"]["spec"]["volumes"]}
    claim = volumes["uploads"]["persistentVolumeClaim"]["claimName"]
    assert kind(claim, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteOnce"]
