"""docker-compose.yml cannot run here; its wiring is checked structurally instead."""

from pathlib import Path

import yaml

from service.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def test_compose_wires_the_api_to_postgres_and_a_qdrant_server() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "qdrant", "api"} <= set(services)
    api = services["api"]
    env = api["environment"]
    assert "@postgres:5432/" in env["CAPPROF_DATABASE_URL"]
    assert env["CAPPROF_QDRANT_URL"].startswith("http://qdrant:")
    assert env["CAPPROF_ENVIRONMENT"] == "production"
    assert ":?" in env["CAPPROF_ADMIN_KEY"], "the admin key must be required, never defaulted"
    for name in env:
        assert name.removeprefix("CAPPROF_").lower() in Settings.model_fields, name
    command = " ".join(api["command"])
    assert command.index("capprof db upgrade") < command.index("capprof serve")
    assert {d: c["condition"] for d, c in api["depends_on"].items()} == {
        "postgres": "service_healthy",
        "qdrant": "service_healthy",
    }
    assert all("healthcheck" in services[s] for s in ("postgres", "qdrant"))


def test_dockerfile_pins_torch_and_installs_the_package() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert '"torch==2.13.0"' in dockerfile
    assert "COPY migrations" in dockerfile
    assert (REPO / ".ci" / "run").stat().st_mode & 0o111
