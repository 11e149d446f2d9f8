"""Every migration upgrades and downgrades on the database under test."""

from sqlalchemy import inspect

from service.runtime import downgrade_database, upgrade_database
from service.store.db import make_engine
from service.store.orm import Base
from tests.conftest import ThrowawayDatabases


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_creates_the_orm_schema_and_downgrade_removes_it(databases: ThrowawayDatabases) -> None:
    url = databases.new()
    upgrade_database(url)
    assert _tables(url) == set(Base.metadata.tables)
    downgrade_database(url, "base")
    assert _tables(url) == set()
    upgrade_database(url)
    assert _tables(url) == set(Base.metadata.tables)


def test_each_revision_steps_down_and_up_again(databases: ThrowawayDatabases) -> None:
    from alembic.script import ScriptDirectory

    from service.runtime import alembic_config

    url = databases.new()
    revisions = list(ScriptDirectory.from_config(alembic_config(url)).walk_revisions())
    upgrade_database(url)
    for revision in revisions:
        downgrade_database(url, revision.down_revision or "base")
        upgrade_database(url, revision.revision)
        downgrade_database(url, revision.down_revision or "base")
    assert _tables(url) == set()
