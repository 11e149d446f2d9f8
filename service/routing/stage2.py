"""Stage 2: the active Model-SAT checkpoint loaded into a scorer, and its per-model heads, for the routable models."""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from profiling.model_heads import ModelHeads, head_keys, with_interim_heads
from profiling.model_sat import ModelSat, aptitude_vectors, evidence_trust
from service.settings import Settings
from service.store.orm import AptitudeTest
from service.store.readers import active_checkpoint, aptitude_matrix


@dataclass(frozen=True)
class Stage2:
    """The active scorer with the model embeddings of the routable models, in routing column order."""

    version: int
    scorer: ModelSat
    model_embeddings: Any  # torch.Tensor, models x dim
    has_aptitude: npt.NDArray[np.bool_]
    # per model, how far the scorer can be believed: 0 for a model it never saw beyond the aptitude items, near 1
    # for a model it was trained on with many records
    trust: npt.NDArray[np.float64]
    # the checkpoint's per-model heads in routing column order (a model registered after it has none), and each
    # head's share in stage 1
    heads: ModelHeads | None = None
    head_shares: npt.NDArray[np.float64] | None = None
    # the checkpoint's own heads in the same order, before `with_interim_heads` filled in the models it lacks
    checkpoint_heads: ModelHeads | None = None


def load_stage2(
    session: Session, settings: Settings, model_ids: npt.NDArray[np.int64], cache: dict[int, ModelSat]
) -> Stage2 | None:
    """The active checkpoint ready to score; None (stage 1 only) when none is active or its weights are gone.

    Weights come from the database (every replica reaches it), else from the file where training wrote them.
    """
    checkpoint = active_checkpoint(session)
    if checkpoint is None:
        return None
    if checkpoint.version not in cache:
        weights = checkpoint.weights
        if weights is None and not Path(checkpoint.path).exists():
            return None
        cache.clear()
        source = io.BytesIO(weights) if weights is not None else Path(checkpoint.path)
        cache[checkpoint.version] = ModelSat.load(source, settings.device)
    scorer = cache[checkpoint.version]
    test = session.get(AptitudeTest, checkpoint.aptitude_test_id)
    assert test is not None
    matrix = aptitude_matrix(session, test, [int(m) for m in model_ids])
    has_aptitude = (~np.isnan(matrix)).sum(axis=1) * 2 >= max(matrix.shape[1], 1)
    vectors = aptitude_vectors(matrix[:, :, None])
    trust = scorer.trust(vectors, settings.reranker_novelty_scale)
    records = checkpoint.training_records
    if records is not None and settings.reranker_evidence_pseudo_count is not None:
        counts = np.array([records.get(str(int(m)), 0) for m in model_ids], np.float64)
        trust = trust * evidence_trust(counts, settings.reranker_evidence_pseudo_count)
    heads = None if scorer.heads is None else scorer.heads.arranged(head_keys(model_ids))
    shares = None if heads is None else heads.shares(settings.heads_weight, settings.heads_pseudo_count)
    return Stage2(checkpoint.version, scorer, scorer.embed_models(vectors), has_aptitude, trust, heads, shares, heads)


def fill_in_heads(
    stage2: Stage2 | None, settings: Settings, vectors: npt.NDArray[np.float32], outcomes: npt.NDArray[np.float32],
    means: npt.NDArray[np.float64],
) -> Stage2 | None:  # fmt: skip
    """`stage2` with a head for each routable model the checkpoint has none for but routing has records of (the
    routing state's evaluated queries and outcome table, its means as the placement), refitted from the checkpoint's
    own heads each time so new records reach them."""
    if stage2 is None or stage2.checkpoint_heads is None:
        return stage2
    heads = with_interim_heads(
        stage2.checkpoint_heads, vectors, outcomes, means if settings.difficulty_adjustment else None
    )
    return replace(stage2, heads=heads, head_shares=heads.shares(settings.heads_weight, settings.heads_pseudo_count))
