"""Runtime configuration, read from CAPPROF_* environment variables (or a .env file)."""

import hashlib
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_ADMIN_KEY = "changethis"
MIN_KEY_SECRET_CHARS = 32
ADMIN_KEY_MIN_LENGTH = 32
KEY_RECIPE = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def admin_key_problem(key: str) -> str | None:
    """Why a key is too weak to guard a production service, or None. Random keys pass (token_urlsafe, hex)."""
    if not key or key == DEFAULT_ADMIN_KEY:
        return "is empty or the default value"
    if len(key) < ADMIN_KEY_MIN_LENGTH:
        return f"is {len(key)} characters; at least {ADMIN_KEY_MIN_LENGTH} are required"
    counts = Counter(key)
    # 32 random hex characters hold about 14 distinct ones, none above ~5 times: these bounds are far looser.
    if len(counts) < 8 or max(counts.values()) > len(key) / 2:
        return "does not look random (too few distinct characters, or one repeated)"
    return None


OWN_SETTINGS_PREFIX = "CAPPROF_"


def is_own_setting(env_name: str) -> bool:
    """An env var capprof reads its own settings from (names are matched without case, as the settings are)."""
    return env_name.upper().startswith(OWN_SETTINGS_PREFIX)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=OWN_SETTINGS_PREFIX, env_file=".env", extra="ignore")

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
    mean_shrinkage: float = Field(
        default=20.0, ge=0.0, description="pseudo-records pulling a model's overall mean toward the population's"
    )
    exemplar_top_k: int = Field(default=16, ge=1)
    max_dimensions: int = Field(default=4, ge=1, description="ranked dimensions kept per kind in a profile")
    difficulty_adjustment: bool = Field(
        default=True,
        description="shift each model's profile by how easy the queries it was evaluated on are for it (a Rasch fit "
        "on the outcome table), so a model known only from its aptitude items is not overrated",
    )
    knn_k: int = Field(default=32, ge=1)
    knn_weight: float = Field(default=0.5, ge=0.0, le=1.0, description="share of the kNN estimate in P(correct)")
    knn_shrinkage: float = Field(
        default=2.0, ge=0.0, description="similarity mass at which the kNN share is half of knn_weight"
    )
    domain_min_similarity: float = Field(
        default=0.25,
        ge=-1.0,
        le=1.0,
        description="cosine similarity a domain exemplar needs to vote; a query farther from all of them gets no domain",
    )
    capability_min_similarity: float = Field(
        default=0.0, ge=-1.0, le=1.0, description="the same for capability exemplars"
    )
    capability_classifier_c: float = Field(
        default=10.0,
        ge=0.0,
        description="inverse L2 strength of the logistic regression over capability exemplars that ranks a query's "
        "capabilities (0: rank them by summed exemplar votes instead)",
    )
    exemplars_per_label: int = Field(default=64, ge=1, description="imported queries kept as exemplars per label")
    search_backend: Literal["snapshot", "qdrant"] = "snapshot"
    reranker_top_k: int = Field(default=8, ge=1, description="stage-1 candidates the Model-SAT scorer re-ranks")
    reranker_weight: float = Field(
        default=0.25, ge=0.0, le=1.0, description="share of the scorer's centred correction in re-ranked P(correct)"
    )
    reranker_novelty_scale: float = Field(
        default=0.1,
        ge=0.0,
        description="RMS aptitude distance from the training models at which the scorer's share falls to 1/e (0: off)",
    )
    reranker_evidence_pseudo_count: float | None = Field(
        default=None,
        ge=0.0,
        description="off by default (None): a model's training records (beyond the aptitude items) at which the "
        "scorer's share is half, so a model it was not trained on keeps its stage-1 estimate; with the centred "
        "correction it measured no better in the onboarding sweeps (docs/evaluation.md)",
    )

    heads_weight: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="share of a model's head (a logistic regression on the query embedding, trained with the "
        "re-ranker checkpoint) in its stage-1 P(correct), for a head fitted on ample records",
    )
    heads_pseudo_count: float = Field(
        default=100.0,
        ge=0.0,
        description="records a head was fitted on at which its share is half of heads_weight (0: full share for any)",
    )

    # Serving.
    route_batch_max: int = Field(default=256, ge=1)
    microbatch_window_ms: float = Field(default=0.0, ge=0.0, description="extra wait for company (0: natural batching)")
    microbatch_max: int = Field(default=64, ge=1)
    embed_batch_size: int = Field(default=64, ge=1)
    decision_flush_interval_s: float | None = Field(default=0.5, description="None: flush only on demand")

    # Operating: API keys, budgets, feedback retention, request logs (issue 11).
    key_secret: SecretStr | None = Field(
        default=None, description="HMAC secret for API key hashes; development derives one from the admin key"
    )
    require_keys: bool | None = Field(
        default=None, description="route/read endpoints need an API key (default: true in production only)"
    )
    store_query_text: bool = Field(default=False, description="keep the query text of decisions (for feedback)")
    retention_days: float = Field(
        default=30.0, gt=0, description="days a decision's query vector and dimension weights are kept for feedback"
    )
    retention_purge_interval_s: float | None = Field(
        default=3600.0, gt=0, description="how often expired decision data is purged (None: start-up only)"
    )
    # Admin console (service/console/).
    console_session_hours: float = Field(
        default=8.0, gt=0, le=24 * 30, description="how long a console login lasts before the key is asked again"
    )
    # OpenAI-compatible gateway (service/gateway/).
    gateway_max_fallbacks: int = Field(default=2, ge=0, le=10, description="alternatives tried after the first")
    gateway_connect_timeout_s: float = Field(default=5.0, gt=0, description="per upstream: connecting")
    gateway_timeout_s: float = Field(
        default=60.0, gt=0, description="per upstream: waiting for the first byte (and between stream chunks)"
    )
    gateway_max_connections: int = Field(default=200, ge=1, description="pooled connections to all upstreams")
    # Scale-out: how often each replica reads the routing-state generation and refreshes when it moved.
    refresh_interval_s: float = Field(
        default=1.0, gt=0, description="seconds between generation checks (bound on cross-replica staleness)"
    )
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
    blas_threads: int = Field(
        default=1,
        ge=0,
        description="threads numpy's BLAS may use in a process that opens the runtime (the server and the CLI "
        "commands that open the stores; 0: its default, one per core); routing's small matrix products alternate "
        "with the scorer's torch calls, and two thread pools spinning on the same cores made one decision 8x slower "
        "(docs/benchmarks.md)",
    )
    rate_limit_per_s: float = Field(default=50.0, ge=0, description="requests per second per caller (0: no limit)")
    rate_limit_burst: int = Field(default=100, ge=1, description="requests a caller may send at once")

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> Self:
        if self.environment != "development":
            problem = admin_key_problem(self.admin_key.get_secret_value())
            if problem:
                raise ValueError(f"CAPPROF_ADMIN_KEY {problem} (outside development mode); make one with: {KEY_RECIPE}")
        return self

    @model_validator(mode="after")
    def _refuse_weak_key_secret(self) -> Self:
        if self.environment == "development":
            return self
        secret = self.key_secret.get_secret_value() if self.key_secret is not None else ""
        if len(secret) < MIN_KEY_SECRET_CHARS:
            raise ValueError(
                f"CAPPROF_KEY_SECRET is missing or shorter than {MIN_KEY_SECRET_CHARS} characters; "
                "set a random secret outside development mode (e.g. openssl rand -hex 32)"
            )
        if secret == self.admin_key.get_secret_value():
            raise ValueError("CAPPROF_KEY_SECRET must differ from CAPPROF_ADMIN_KEY")
        return self

    @cached_property
    def keys_required(self) -> bool:
        return self.require_keys if self.require_keys is not None else self.environment != "development"

    @cached_property
    def resolved_key_secret(self) -> bytes:
        """The HMAC secret; in development a stable one derived from the admin key, so keys survive restarts."""
        if self.key_secret is not None:
            return self.key_secret.get_secret_value().encode()
        return hashlib.sha256(b"capprof-dev-key-secret:" + self.admin_key.get_secret_value().encode()).digest()

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
