"""Every curl example of README.md runs against the served demo data (data/ imported as `make run` does)."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from profiling.embedding_cache import CachedEmbedder
from service.app import create_app
from tests.conftest import REPO, ThrowawayDatabases
from tests.demo import demo_runtime

README = REPO / "README.md"


@dataclass(frozen=True)
class CurlStep:
    """One curl command of a README bash block: where it stands, its text (shell variables not yet expanded), the
    variables its block set, and, for `NAME=$(curl ... | python3 -c '...["field"]')`, where its answer goes."""

    line: int
    command: str
    variables: dict[str, str]
    capture: tuple[str, str] | None = None  # (variable, JSON field of the answer)


def _logical_lines(block: str, first_line: int) -> Iterator[tuple[int, str]]:
    """Lines with their continuations (a trailing backslash) joined."""
    pending: tuple[int, str] | None = None
    for offset, line in enumerate(block.splitlines()):
        start, text = pending if pending is not None else (first_line + offset, "")
        text = f"{text} {line.strip()}" if text else line.rstrip()
        if text.endswith("\\"):
            pending = (start, text[:-1].rstrip())
            continue
        pending = None
        yield start, text


def curl_steps(text: str) -> list[CurlStep]:
    """Every curl command in the README's bash blocks, in order, with what its block assigned before it."""
    steps: list[CurlStep] = []
    for block in re.finditer(r"```(?:bash|sh|shell)\n(.*?)```", text, re.S):
        first_line = text[: block.start(1)].count("\n") + 1
        variables: dict[str, str] = {}
        pending: tuple[int, str] | None = None
        for line, logical in _logical_lines(block.group(1), first_line):
            if pending is not None:  # a quoted argument spans lines: keep them as written
                line, logical = pending[0], pending[1] + "\n" + logical
            else:
                logical = logical.strip()
            captured = re.match(r"^([A-Z_]+)=\$\((curl .*)\|\s*python3 -c .*\[\"(\w+)\"\]", logical, re.S)
            if captured:
                steps.append(CurlStep(line, captured.group(2).strip(), dict(variables), captured.group(1, 3)))
                variables[captured.group(1)] = f"${captured.group(1)}"  # filled in when the step runs
                continue
            if re.match(r"^[A-Z_]+=", logical) and not logical.startswith(("curl ",)):
                for name, value in (part.split("=", 1) for part in shlex.split(logical.replace(";", " "))):
                    variables[name] = value
                continue
            if not logical.startswith("curl "):
                continue
            try:
                shlex.split(logical, comments=True)
            except ValueError:  # an open quote: the command goes on on the next line
                pending = (line, logical)
                continue
            pending = None
            steps.append(CurlStep(line, logical, dict(variables)))
    return steps


def argv_of(step: CurlStep, captured: dict[str, str]) -> list[str]:
    values = {**step.variables, **captured}
    expanded = re.sub(r"\$(\w+)|\$\{(\w+)\}", lambda m: values[m.group(1) or m.group(2)], step.command)
    return shlex.split(expanded, comments=True)


def curl_examples(text: str) -> list[tuple[int, list[str]]]:
    """(line, argv) of each curl command; variables captured from an earlier answer stay placeholders."""
    return [(step.line, argv_of(step, {})) for step in curl_steps(text)]


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
    """`make run` in process (tests/demo.py), with the README's development admin key."""
    runtime = demo_runtime(databases, embedder, tmp_path_factory.mktemp("demo"))
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
    captured: dict[str, str] = {}  # variables the examples fill from an earlier answer (a key, a decision id)
    for step in curl_steps(README.read_text()):
        method, path, headers, body = as_request(argv_of(step, captured))
        if body is not None:
            json.loads(body)  # the example itself must be valid JSON
        response = demo.request(method, path, headers=headers, content=body)
        if not 200 <= response.status_code < 300:
            failures.append(
                f"README.md line {step.line}: {method} {path} -> {response.status_code} {response.text[:200]}"
            )
        elif step.capture is not None:
            name, field = step.capture
            captured[name] = str(response.json()[field])
    assert not failures, "\n".join(failures)


def test_examples_that_use_an_earlier_answer_are_run_with_it() -> None:
    steps = curl_steps(README.read_text())
    captures = {step.capture for step in steps if step.capture is not None}
    assert ("KEY", "key") in captures and ("D", "decision_id") in captures
    uses_key = [step for step in steps if "$KEY" in step.command]
    assert uses_key and argv_of(uses_key[0], {"KEY": "k1"}).count("Authorization: Bearer k1") == 1


def test_the_readme_does_not_promise_more_aptitude_tasks_than_the_demo_builds(demo: TestClient) -> None:
    tasks = len(demo.get("/v1/aptitude").json()["tasks"])
    claims = [int(n) for n in re.findall(r"aptitude test \((\d+) tasks", README.read_text())]
    assert all(n <= tasks for n in claims), (claims, tasks)


def test_curl_parsing_is_generic() -> None:
    text = "```bash\nK='X-Admin-Key: k'\ncurl -X PUT localhost:8000/v1/x -H \"$K\" -d '{\"a\":\n 1}'\n```\n"
    [(line, argv)] = curl_examples(text)
    assert line == 3
    assert as_request(argv) == ("PUT", "/v1/x", {"X-Admin-Key": "k"}, '{"a":\n 1}')
