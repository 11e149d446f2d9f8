"""docker-compose.yml cannot run here; its wiring is checked structurally instead."""

from pathlib import Path

import yaml

from service.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def test_compose_runs_two_api_replicas_behind_a_proxy_on_one_postgres_and_one_qdrant_server() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    replicas = sorted(name for name in services if name.startswith("api-"))
    assert len(replicas) >= 2
    assert {"postgres", "qdrant", "migrate", "proxy"} <= set(services)
    for name in replicas:
        api = services[name]
        env = api["environment"]
        assert "@postgres:5432/" in env["CAPPROF_DATABASE_URL"]
        assert env["CAPPROF_QDRANT_URL"].startswith("http://qdrant:"), "replicas share one Qdrant server"
        assert env["CAPPROF_ENVIRONMENT"] == "production"
        assert ":?" in env["CAPPROF_ADMIN_KEY"], "the admin key must be required, never defaulted"
        for variable in env:
            assert variable.removeprefix("CAPPROF_").lower() in Settings.model_fields, variable
        assert "capprof serve" in " ".join(api["command"])
        assert "db upgrade" not in " ".join(api["command"]), "replicas must not migrate concurrently"
        assert {d: c["condition"] for d, c in api["depends_on"].items()} == {
            "migrate": "service_completed_successfully",
            "qdrant": "service_healthy",
        }
        assert "healthcheck" in api
    # every replica has a data volume of its own (nothing shared on disk between replicas)
    volumes = [tuple(services[name]["volumes"]) for name in replicas]
    assert len(set(volumes)) == len(volumes)
    assert {e["CAPPROF_DATABASE_URL"] for e in (services[n]["environment"] for n in replicas)} == {
        services["migrate"]["environment"]["CAPPROF_DATABASE_URL"]
    }
    assert " ".join(services["migrate"]["command"]) == "capprof db upgrade"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert all("healthcheck" in services[s] for s in ("postgres", "qdrant"))

    proxy = services["proxy"]
    assert proxy["image"].startswith("nginx")
    assert set(proxy["depends_on"]) == set(replicas)
    mounted = {v.split(":")[0] for v in proxy["volumes"]}
    assert "./deploy/nginx.conf" in mounted
    config = (REPO / "deploy" / "nginx.conf").read_text()
    for name in replicas:
        assert f"server {name}:8000" in config, f"the proxy does not send traffic to {name}"
    assert "proxy_pass http://capprof_api" in config
    # behind a TLS proxy the console's session cookie is Secure only if the replicas learn the original scheme
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in config
    assert all("--forwarded-allow-ips" in services[name]["command"] for name in replicas)


def test_dockerfile_pins_torch_and_installs_the_package() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert '"torch==2.13.0"' in dockerfile
    assert "COPY migrations" in dockerfile
    assert (REPO / ".ci" / "run").stat().st_mode & 0o111
