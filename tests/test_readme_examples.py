"""Every curl example of README.md runs against the served demo data (data/ imported as `make run` does)."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from profiling.embedding_cache import CachedEmbedder
from profiling.model_sat import ModelSatConfig
from service.app import create_app
from service.registry.aptitude import build_test
from service.registry.checkpoints import activate, train_checkpoint
from service.registry.importer import import_data
from service.runtime import Runtime, upgrade_database
from service.store.vector_store import VectorStore
from tests.conftest import REPO, ThrowawayDatabases, make_settings

README = REPO / "README.md"


def curl_examples(text: str) -> list[tuple[int, list[str]]]:
    """(line, argv) of each curl command in the README's bash blocks, shell variables set in the block expanded."""
    examples: list[tuple[int, list[str]]] = []
    for block in re.finditer(r"```(?:bash|sh|shell)\n(.*?)```", text, re.S):
        first_line = text[: block.start(1)].count("\n") + 1
        variables: dict[str, str] = {}
        pending: tuple[int, str] | None = None
        for offset, line in enumerate(block.group(1).splitlines()):
            if pending is None:
                stripped = line.strip()
                if stripped.startswith("curl "):
                    pending = (first_line + offset, stripped)
                elif re.match(r"^[A-Z_]+=", stripped):
                    for name, value in (part.split("=", 1) for part in shlex.split(stripped.replace(";", " "))):
                        variables[name] = value
                    continue
                else:
                    continue
            else:
                pending = (pending[0], pending[1] + "\n" + line)
            try:
                expanded = re.sub(
                    r"\$(\w+)|\$\{(\w+)\}", lambda m, v=variables: v[m.group(1) or m.group(2)], pending[1]
                )
                argv = shlex.split(expanded, comments=True)
            except ValueError:  # an open quote: the command goes on on the next line
                continue
            examples.append((pending[0], argv))
            pending = None
    return examples


def as_request(argv: list[str]) -> tuple[str, str, dict[str, str], str | None]:
    """(method, path, headers, body) of a curl command line."""
    method, headers, body, url = "GET", {}, None, None
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-X", "--request"):
            method = next(args)
        elif arg in ("-H", "--header"):
            name, value = next(args).split(":", 1)
            headers[name.strip()] = value.strip()
        elif arg in ("-d", "--data", "--data-raw"):
            body = next(args)
            method = "POST" if method == "GET" else method
        elif arg.startswith("-"):
            continue
        else:
            url = arg
    assert url is not None, argv
    return method, re.sub(r"^(https?://)?[^/]+", "", url) or "/", headers, body


@pytest.fixture(scope="module")
def demo(
    databases: ThrowawayDatabases, embedder: CachedEmbedder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """`make run` in process: migrate, import data/, build the aptitude test, train and activate a re-ranker."""
    url = databases.new()
    upgrade_database(url)
    tmp = tmp_path_factory.mktemp("demo")
    settings = make_settings(tmp, database_url=url, admin_key="changethis")  # the README's development key
    store = VectorStore.from_settings(settings, embedder.dimension)
    runtime = Runtime(settings, embedder=embedder, store=store)
    with runtime.transaction() as session:
        import_data(session, store, embedder, settings, REPO / "data", progress=False)
        build_test(session, store)
        # A small scorer keeps the test fast; what the examples touch (versions, activation) is the same.
        checkpoint = train_checkpoint(
            session, store, embedder, settings, ModelSatConfig(epochs=2, hidden=32, model_dim=16)
        )
        activate(session, checkpoint.version)
    with TestClient(create_app(runtime=runtime)) as client:
        yield client


def test_the_readme_has_curl_examples_of_every_surface() -> None:
    paths = {
        as_request(argv)[1].split("/")[2] if as_request(argv)[1].startswith("/v1/") else as_request(argv)[1]
        for _, argv in curl_examples(README.read_text())
    }
    assert {"models", "route", "dimensions", "aptitude", "reranker", "/healthz", "/readyz"} <= paths


def test_every_readme_curl_example_succeeds_on_the_demo(demo: TestClient) -> None:
    failures = []
    for line, argv in curl_examples(README.read_text()):
        method, path, headers, body = as_request(argv)
        if body is not None:
            json.loads(body)  # the example itself must be valid JSON
        response = demo.request(method, path, headers=headers, content=body)
        if not 200 <= response.status_code < 300:
            failures.append(f"README.md line {line}: {method} {path} -> {response.status_code} {response.text[:200]}")
    assert not failures, "\n".join(failures)


def test_the_readme_does_not_promise_more_aptitude_tasks_than_the_demo_builds(demo: TestClient) -> None:
    tasks = len(demo.get("/v1/aptitude").json()["tasks"])
    claims = [int(n) for n in re.findall(r"aptitude test \((\d+) tasks", README.read_text())]
    assert all(n <= tasks for n in claims), (claims, tasks)


def test_curl_parsing_is_generic() -> None:
    text = "```bash\nK='X-Admin-Key: k'\ncurl -X PUT localhost:8000/v1/x -H \"$K\" -d '{\"a\":\n 1}'\n```\n"
    [(line, argv)] = curl_examples(text)
    assert line == 3
    assert as_request(argv) == ("PUT", "/v1/x", {"X-Admin-Key": "k"}, '{"a":\n 1}')
