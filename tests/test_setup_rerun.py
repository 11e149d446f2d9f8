"""Re-running set-up never destroys a user's work (issue 10, item 8)."""

from __future__ import annotations

import csv
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from profiling.embedding_cache import CachedEmbedder
from service.app import create_app
from service.cli import app as cli
from service.registry.importer import import_data
from service.runtime import Runtime, upgrade_database
from service.settings import Settings
from service.store.orm import LlmModel
from service.store.vector_store import VectorStore
from tests.conftest import ADMIN, ThrowawayDatabases, memory_store, shared_family, small_family


def _prices(sessions: sessionmaker[Session]) -> dict[str, tuple[float | None, float | None, str]]:
    with sessions() as session:
        return {
            m.name: (m.input_usd_per_mtok, m.output_usd_per_mtok, m.status) for m in session.scalars(select(LlmModel))
        }


def _set_file_price(family: Path, model: str, price: float) -> None:
    path = family / "models.csv"
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        if row["model"] == model:
            row["input_usd_per_mtok"] = str(price)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_reimport_keeps_what_the_api_changed_unless_overwrite(
    session_factory: sessionmaker[Session],
    store: VectorStore,
    embedder: CachedEmbedder,
    settings: Settings,
    tmp_path: Path,
) -> None:
    family = small_family(tmp_path, shared_family("zeroeval"), 10)

    def run_import(overwrite: bool = False) -> list[str]:
        with session_factory() as session, session.begin():
            return import_data(session, store, embedder, settings, family, False, overwrite).kept_api_values

    run_import()
    first = _prices(session_factory)
    edited, untouched = sorted(first)[:2]
    api = Runtime(settings, embedder=embedder, session_factory=session_factory, store=memory_store(embedder))
    with TestClient(create_app(runtime=api)) as client:  # closes its own store on exit, not the import's
        patched = client.patch(
            f"/v1/models/{edited}", json={"input_usd_per_mtok": 123.0, "status": "disabled"}, headers=ADMIN
        )
        assert patched.status_code == 200
    _set_file_price(family, untouched, 7.5)  # the file changed too: a field nobody edited follows the file

    kept = run_import()
    after = _prices(session_factory)
    assert after[edited] == (123.0, first[edited][1], "disabled")
    assert f"{edited}.input_usd_per_mtok" in kept
    assert after[untouched][0] == 7.5

    assert run_import() == [f"{edited}.input_usd_per_mtok"]  # still kept on the next run
    run_import(overwrite=True)
    overwritten = _prices(session_factory)
    assert overwritten[edited][0] == first[edited][0]
    assert overwritten[edited][2] == "disabled"  # an import never writes status


def _migrated_deployment(databases: ThrowawayDatabases, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A small zeroeval family to import and the environment of a migrated deployment of its own."""
    url = databases.new()
    upgrade_database(url)
    family = small_family(tmp_path / "data", shared_family("zeroeval"), 5)
    env = {
        "CAPPROF_DATA_DIR": str(tmp_path / "state"),
        "CAPPROF_DATABASE_URL": url,
        "CAPPROF_QDRANT_PATH": str(tmp_path / "state" / "qdrant"),
        "CAPPROF_DEVICE": "cpu",
    }
    return family, env


def test_import_if_changed_skips_files_imported_before(databases: ThrowawayDatabases, tmp_path: Path) -> None:
    family, env = _migrated_deployment(databases, tmp_path)
    runner = CliRunner()
    first = runner.invoke(cli, ["import", str(family.parent), "--if-changed", "--no-progress"], env=env)
    assert first.exit_code == 0, first.output
    assert "imported zeroeval" in first.output
    again = runner.invoke(cli, ["import", str(family.parent), "--if-changed", "--no-progress"], env=env)
    assert again.exit_code == 0, again.output
    assert "import skipped" in again.output
    _set_file_price(family, sorted(_models(family))[0], 9.0)
    changed = runner.invoke(cli, ["import", str(family.parent), "--if-changed", "--no-progress"], env=env)
    assert "imported zeroeval" in changed.output


def _models(family: Path) -> list[str]:
    with (family / "models.csv").open(newline="") as handle:
        return [row["model"] for row in csv.DictReader(handle)]


def test_make_run_skips_every_step_already_done() -> None:
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    assert '[ "$(cat "$stamp" 2>/dev/null)" = "$want" ]' in (scripts / "setup.sh").read_text()  # pip skipped
    script = (scripts / "run.sh").read_text()
    assert "capprof import data --if-changed" in script
    assert "aptitude build --if-missing" in script
    assert "reranker train --activate --if-missing" in script
    assert "profiles rebuild --if-stale" in script


def test_a_command_on_an_unmigrated_database_says_to_upgrade(databases: ThrowawayDatabases, tmp_path: Path) -> None:
    """Before `capprof db upgrade`, a command names the fix instead of printing a traceback; after it, it runs."""
    url = databases.new()
    env = {"CAPPROF_DATA_DIR": str(tmp_path / "state"), "CAPPROF_DATABASE_URL": url, "CAPPROF_DEVICE": "cpu"}
    runner = CliRunner()
    before = runner.invoke(cli, ["keys", "list"], env=env)
    assert before.exit_code == 3, before.output
    assert "run `capprof db upgrade`" in before.output
    assert before.exception is None or isinstance(before.exception, SystemExit)
    upgrade_database(url)
    after = runner.invoke(cli, ["keys", "list"], env=env)
    assert after.exit_code == 0, after.output
    assert "capprof db upgrade" not in after.output


def test_profiles_are_rebuilt_only_when_profiling_has_changed(databases: ThrowawayDatabases, tmp_path: Path) -> None:
    """After an upgrade or a settings change that profiles queries differently, re-running set-up re-profiles the
    stored queries; otherwise it leaves them alone."""
    family, env = _migrated_deployment(databases, tmp_path)
    runner = CliRunner()
    imported = runner.invoke(cli, ["import", str(family.parent), "--no-progress"], env=env)
    assert imported.exit_code == 0, imported.output
    current = runner.invoke(cli, ["profiles", "rebuild", "--if-stale"], env=env)
    assert current.exit_code == 0 and "rebuild skipped" in current.output, current.output
    summed_votes = env | {"CAPPROF_CAPABILITY_CLASSIFIER_C": "0"}  # capabilities ranked the old way
    changed = runner.invoke(cli, ["profiles", "rebuild", "--if-stale"], env=summed_votes)
    assert changed.exit_code == 0 and "profiled" in changed.output, changed.output
    again = runner.invoke(cli, ["profiles", "rebuild", "--if-stale"], env=summed_votes)
    assert "rebuild skipped" in again.output, again.output
