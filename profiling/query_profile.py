"""Query profile: nearest exemplars vote for dimensions (a classifier over the exemplars ranks capabilities);
ranked lists get rank-decay weights."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from profiling.vector_index import VectorIndex

CAPABILITY, DOMAIN = "capability", "domain"
KINDS = (CAPABILITY, DOMAIN)


@dataclass(frozen=True)
class DimensionCatalog:
    """Dimensions in column order: id, name and kind of each profile-matrix column."""

    ids: tuple[int, ...]
    names: tuple[str, ...]
    kinds: tuple[str, ...]
    catch_all: tuple[bool, ...] = ()  # per column; empty = none is a catch-all
    kind_masks: dict[str, npt.NDArray[np.bool_]] = field(init=False, repr=False, compare=False)
    catch_all_mask: npt.NDArray[np.bool_] = field(init=False, repr=False, compare=False)
    _column: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_column", {d: i for i, d in enumerate(self.ids)})
        object.__setattr__(self, "kind_masks", {k: np.array([x == k for x in self.kinds], dtype=bool) for k in KINDS})
        flags = self.catch_all or (False,) * len(self.ids)
        object.__setattr__(self, "catch_all_mask", np.array(flags, dtype=bool).reshape(len(self.ids)))

    def __len__(self) -> int:
        return len(self.ids)

    def column(self, dimension_id: int) -> int:
        return self._column[dimension_id]


@dataclass(frozen=True)
class RankedDimension:
    id: int
    name: str
    kind: str
    weight: float
    vote: float


@dataclass(frozen=True)
class QueryProfile:
    capabilities: tuple[RankedDimension, ...]
    domains: tuple[RankedDimension, ...]
    nearest_similarity: float


def rank_weights(count: int, decay: float) -> npt.NDArray[np.float64]:
    """w_j = a^(j-1) / sum_m a^(m-1) (InferenceDynamics' rank decay)."""
    raw = decay ** np.arange(count, dtype=np.float64)
    return raw / raw.sum()


@dataclass(frozen=True)
class ExemplarSet:
    """Exemplar vectors and, aligned with the index rows, the catalog column each belongs to."""

    index: VectorIndex
    columns: npt.NDArray[np.int64]


@dataclass(frozen=True)
class ExemplarClassifier:
    """A multinomial logistic regression over one kind's exemplar vectors: P(dimension | query) per catalog column.

    Why: summed similarities of the nearest exemplars let whichever dimension has most exemplars near a query win,
    so short knowledge questions went to coding or reasoning by their topic, and passages with a question to
    instruction following. A linear boundary between the dimensions' exemplars weighs what separates them:
    top-1 capability on the held-out probes went from 84.8% to 90.1% and 84.3% to 89.5% (docs/evaluation.md).
    """

    coef: npt.NDArray[np.float64]  # classes x embedding dim (one row for two classes: the second's log-odds)
    intercept: npt.NDArray[np.float64]
    columns: npt.NDArray[np.int64]  # the catalog column of each class

    @classmethod
    def fit(
        cls, vectors: npt.NDArray[np.float32], columns: npt.NDArray[np.int64], c: float
    ) -> ExemplarClassifier | None:
        """None when fewer than two dimensions have exemplars (nothing to tell apart)."""
        if len(np.unique(columns)) < 2:
            return None
        model = LogisticRegression(C=c, max_iter=1000)
        with warnings.catch_warnings():  # a few more iterations would move the probabilities by less than it says
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(np.asarray(vectors, np.float64), columns)
        return cls(
            np.asarray(model.coef_, np.float64),
            np.asarray(model.intercept_, np.float64),
            np.asarray(model.classes_, np.int64),
        )

    def probabilities(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """(batch x classes) P(dimension | query), classes in `columns` order (scikit-learn's predict_proba, without
        its per-call checks: this runs on every routed batch)."""
        logits = np.asarray(vectors, np.float64) @ self.coef.T + self.intercept
        if self.coef.shape[0] == 1:
            logits = np.concatenate([np.zeros_like(logits), logits], axis=1)
        logits -= logits.max(axis=1, keepdims=True)
        odds = np.exp(logits)
        return np.asarray(odds / odds.sum(axis=1, keepdims=True))


class QueryProfiler:
    """Turns query vectors into dimension weights: one row per query, one column per dimension."""

    def __init__(
        self,
        catalog: DimensionCatalog,
        exemplars: dict[str, ExemplarSet],
        top_k: int,
        rank_decay: float,
        max_dimensions: int,
        min_similarity: dict[str, float] | None = None,
        classifiers: Mapping[str, ExemplarClassifier] | None = None,
    ) -> None:
        self.catalog = catalog
        self.exemplars = exemplars
        # Per kind, an optional classifier that ranks that kind's dimensions instead of the summed votes.
        self.classifiers = dict(classifiers or {})
        # Per kind, the similarity an exemplar needs to vote: a query far from every domain's exemplars gets no
        # domain (and is routed on capabilities and the models' overall records) instead of a confident wrong one.
        self.min_similarity = min_similarity or {}
        self.top_k = top_k
        self.rank_decay = rank_decay
        self.max_dimensions = max_dimensions
        self._rank_weights = rank_weights(max_dimensions, rank_decay)

    def votes(self, vectors: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float32]]:
        """(batch x dimensions) similarity-weighted votes of each kind's top-k exemplars, and the best similarity.

        Each kind is searched on its own, so many imported domain exemplars never crowd out capabilities.
        """
        votes = np.zeros((len(vectors), len(self.catalog)), dtype=np.float64)
        best = np.zeros(len(vectors), np.float32)
        for kind, exemplar_set in self.exemplars.items():
            rows, sims = exemplar_set.index.search(vectors, self.top_k)
            if not rows.shape[1]:
                continue
            columns = exemplar_set.columns[rows]
            batch = np.repeat(np.arange(len(vectors)), rows.shape[1])
            voting = np.where(sims >= self.min_similarity.get(kind, 0.0), np.clip(sims, 0.0, None), 0.0)
            np.add.at(votes, (batch, columns.ravel()), voting.ravel())
            best = np.maximum(best, sims[:, 0])
        return votes, best

    def ranking_scores(
        self, vectors: npt.NDArray[np.float32], votes: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """The votes, with each classified kind's columns replaced by its classifier's probabilities on the queries
        where that kind got a vote (a query below the kind's similarity floor stays without one)."""
        scores = votes.copy()
        for kind, classifier in self.classifiers.items():
            mask = self.catalog.kind_masks[kind]
            voted = np.flatnonzero((votes[:, mask] > 0).any(axis=1))
            scores[np.ix_(voted, np.flatnonzero(mask))] = 0.0  # a column the classifier never saw gets nothing
            scores[np.ix_(voted, classifier.columns)] = classifier.probabilities(vectors[voted])
        return scores

    def weights(self, votes: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Rank-decay weights per kind from `votes` (or `ranking_scores`): each kind's kept dimensions sum to 1
        (0 where a kind got no vote).

        A catch-all dimension never gets weight; a query whose strongest vote of its kind is a catch-all gets
        no dimension of that kind (an everyday question is about no knowledge domain).
        """
        weights = np.zeros_like(votes)
        for kind in KINDS:
            catch = self.catalog.kind_masks[kind] & self.catalog.catch_all_mask
            mask = self.catalog.kind_masks[kind] & ~catch
            if not mask.any():
                continue
            cols = np.flatnonzero(mask)
            kind_votes = votes[:, cols]
            keep = min(self.max_dimensions, len(cols))
            order = np.argsort(-kind_votes, axis=1, kind="stable")[:, :keep]
            ranked_votes = np.take_along_axis(kind_votes, order, axis=1)
            present = ranked_votes > 0
            w = np.where(present, self._rank_weights[:keep], 0.0)
            total = w.sum(axis=1, keepdims=True)
            w = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
            if catch.any():
                caught = votes[:, catch].max(axis=1) >= kind_votes.max(axis=1)
                w[caught] = 0.0
            rows = np.arange(len(votes))[:, None]
            weights[rows, cols[order]] = w
        return weights

    def profile_vectors(
        self, vectors: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float32]]:
        """(weights, votes, nearest similarity) for a batch of query vectors."""
        votes, best = self.votes(vectors)
        return self.weights(self.ranking_scores(vectors, votes)), votes, best

    def describe(
        self, weights_row: npt.NDArray[np.float64], votes_row: npt.NDArray[np.float64], nearest: float
    ) -> QueryProfile:
        """The typed, ranked view of one query's profile (for responses and logs)."""
        ranked: dict[str, list[RankedDimension]] = {kind: [] for kind in KINDS}
        for col in np.flatnonzero(weights_row > 0):
            kind = self.catalog.kinds[col]
            ranked[kind].append(
                RankedDimension(
                    self.catalog.ids[col],
                    self.catalog.names[col],
                    kind,
                    float(weights_row[col]),
                    float(votes_row[col]),
                )
            )
        for items in ranked.values():
            items.sort(key=lambda d: -d.weight)
        return QueryProfile(tuple(ranked[CAPABILITY]), tuple(ranked[DOMAIN]), float(nearest))
