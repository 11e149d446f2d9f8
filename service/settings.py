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
    reranker_poll_s: float = Field(
        default=5.0, gt=0, description="how often the service looks for a newly activated checkpoint"
    )

    # Serving.
    route_batch_max: int = Field(default=256, ge=1)
    microbatch_window_ms: float = Field(default=0.0, ge=0.0, description="extra wait for company (0: natural batching)")
    microbatch_max: int = Field(default=64, ge=1)
    embed_batch_size: int = Field(default=64, ge=1)
    decision_flush_interval_s: float | None = Field(default=0.5, description="None: flush only on demand")

    # Limits and overload (issue 10, item 2): checked before a body is read whole and before anything is embedded.
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, description="larger bodies get 413 while streaming")
    max_messages: int = Field(default=64, ge=1, description="most messages in one chat (422 beyond)")
    max_text_chars: int = Field(
        default=8000, ge=100, description="most characters per query or message; the model reads ~1,000 anyway"
    )
    text_overflow: Literal["truncate", "refuse"] = Field(
        default="truncate", description="a longer text is cut (the response lists it in `truncated`) or refused (422)"
    )
    max_batch_texts: int = Field(default=512, ge=1, description="most texts (queries + messages) in one route batch")
    embed_max_tokens: int = Field(default=4096, ge=256, description="padded tokens per interactive embedding call")
    embed_bulk_max_tokens: int = Field(
        default=1024, ge=256, description="padded tokens per call of a route batch: bounds how long a short query waits"
    )
    rate_limit_per_s: float = Field(default=50.0, ge=0, description="requests per second per caller (0: no limit)")
    rate_limit_burst: int = Field(default=100, ge=1, description="requests a caller may send at once")

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
