"""Settings come from CAPPROF_* variables and refuse a default secret outside development."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_production_refuses_the_default_admin_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPPROF_ENVIRONMENT", "production")
    monkeypatch.delenv("CAPPROF_ADMIN_KEY", raising=False)
    with pytest.raises(ValidationError, match="CAPPROF_ADMIN_KEY"):
        Settings()
    monkeypatch.setenv("CAPPROF_ADMIN_KEY", "kV3q9Zr7Lx2Pw8Nt4Bh6Jm1Yc5Ds0Fg-")
    monkeypatch.setenv("CAPPROF_KEY_SECRET", "k" * 32)
    assert Settings().admin_key.get_secret_value() == "kV3q9Zr7Lx2Pw8Nt4Bh6Jm1Yc5Ds0Fg-"


def test_defaults_live_in_the_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CAPPROF_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CAPPROF_DATABASE_URL", raising=False)
    monkeypatch.delenv("CAPPROF_QDRANT_PATH", raising=False)
    settings = Settings()
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve() / 'capprof.db'}"
    assert settings.resolved_qdrant_path == str(tmp_path.resolve() / "qdrant")


def test_admin_key_is_never_printed() -> None:
    settings = Settings(admin_key="super-secret-value")
    assert "super-secret-value" not in repr(settings)


def test_a_service_process_keeps_numpys_blas_to_the_threads_it_is_given(tmp_path: Path) -> None:
    """Routing alternates small numpy products with the scorer's torch calls; numpy's BLAS threads spinning beside
    torch's made a decision 8x slower on two cores, so a runtime limits them (CAPPROF_BLAS_THREADS)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from service.runtime import Runtime

    with threadpool_limits(limits=2, user_api="blas"):  # as a fresh process on two cores starts; restored after
        if not any(pool["num_threads"] == 2 for pool in threadpool_info() if pool["user_api"] == "blas"):
            pytest.skip("this machine's BLAS will not run two threads")
        Runtime(Settings(data_dir=tmp_path, blas_threads=1))
        blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert blas and all(n == 1 for n in blas)
