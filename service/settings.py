"""Runtime configuration, read from CAPPROF_* environment variables (or a .env file)."""

from functools import cached_property
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_ADMIN_KEY = "changethis"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAPPROF_", env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Path(".capprof")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default: SQLite in data_dir")
    qdrant_path: str | None = Field(default=None, description="embedded Qdrant folder, or ':memory:'")
    qdrant_url: str | None = Field(default=None, description="a Qdrant server; wins over qdrant_path")
    qdrant_api_key: SecretStr | None = None
    device: str = Field(default="auto", description="'auto' = CUDA when available, else 'cpu', 'cuda', 'cuda:1'")
    admin_key: SecretStr = SecretStr(DEFAULT_ADMIN_KEY)

    # Routing algorithm knobs (DESIGN.md, "Algorithms").
    rank_decay: float = Field(default=0.7, ge=0.0, le=1.0, description="a: weight of the j-th ranked dimension")
    cost_penalty: float = Field(default=0.0, ge=0.0, description="b: cost penalty inside model profiles")
    shrinkage: float = Field(default=10.0, ge=0.0, description="pseudo-count pulling thin profiles to the mean")
    exemplar_top_k: int = Field(default=16, ge=1)
    max_dimensions: int = Field(default=4, ge=1, description="ranked dimensions kept per kind in a profile")
    knn_k: int = Field(default=32, ge=1)
    knn_weight: float = Field(default=0.5, ge=0.0, le=1.0, description="share of the kNN estimate in P(correct)")
    knn_shrinkage: float = Field(
        default=2.0, ge=0.0, description="similarity mass at which the kNN share is half of knn_weight"
    )
    exemplars_per_label: int = Field(default=64, ge=1, description="imported queries kept as exemplars per label")
    search_backend: Literal["snapshot", "qdrant"] = "snapshot"
    reranker_top_k: int = Field(default=8, ge=1, description="stage-1 candidates the Model-SAT scorer re-ranks")
    reranker_weight: float = Field(
        default=0.5, ge=0.0, le=1.0, description="share of the scorer in re-ranked P(correct)"
    )

    # Serving.
    route_batch_max: int = Field(default=256, ge=1)
    microbatch_window_ms: float = Field(default=0.0, ge=0.0, description="extra wait for company (0: natural batching)")
    microbatch_max: int = Field(default=64, ge=1)
    embed_batch_size: int = Field(default=64, ge=1)
    decision_flush_interval_s: float | None = Field(default=0.5, description="None: flush only on demand")

    # Scale-out: how often each replica reads the routing-state generation and refreshes when it moved.
    refresh_interval_s: float = Field(
        default=1.0, gt=0, description="seconds between generation checks (bound on cross-replica staleness)"
    )

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> Self:
        if self.environment != "development" and self.admin_key.get_secret_value() == DEFAULT_ADMIN_KEY:
            raise ValueError("CAPPROF_ADMIN_KEY is the default value; set a real secret outside development mode")
        return self

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'capprof.db').resolve()}"

    @cached_property
    def resolved_qdrant_path(self) -> str:
        return self.qdrant_path or str((self.data_dir / "qdrant").resolve())

    @cached_property
    def embedding_cache_dir(self) -> Path:
        return self.data_dir / "embeddings"

    @cached_property
    def checkpoint_dir(self) -> Path:
        return self.data_dir / "checkpoints"
