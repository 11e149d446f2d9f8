"""Model-SAT (Zhang et al., AAAI-25): a model is described by its aptitude test results; a learned scorer
reads that description with the query and predicts P(model answers correctly).

- Capability encoder: the aptitude vector (accuracy per task) weights the task descriptions' embeddings,
  giving a model embedding in a space the query embedding is projected into. The pooling is over tasks,
  so it is invariant to task order (the paper's shuffled-order perturbation would change nothing here).
- Scorer: an MLP over [query * model, query, model] -> logit.
- Training: the paper's grouped objective (per model, one query it got right against k-1 it got wrong,
  softmax over the group) plus binary cross-entropy so scores compare across models; aptitude vectors are
  re-drawn each step from bootstrap samples of the items, so the encoder learns what a noisy 20-item
  estimate means rather than memorising the training models.
- Calibration: Platt scaling on held-out queries; the expected calibration error is reported.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from profiling.embedder import resolve_device
from profiling.model_heads import ModelHeads

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ModelSatConfig:
    model_dim: int = 128
    hidden: int = 256
    dropout: float = 0.1
    group_size: int = 8
    groups_per_model: int = 8
    bce_weight: float = 1.0
    batch_queries: int = 256
    epochs: int = 20
    patience: int = 4
    lr: float = 2e-3
    weight_decay: float = 1e-4
    validation_share: float = 0.1
    seed: int = 0


class CapabilityEncoder(nn.Module):
    """Aptitude vector + task-description embeddings -> model embedding."""

    def __init__(self, text_dim: int, model_dim: int) -> None:
        super().__init__()
        self.task = nn.Linear(text_dim, model_dim)
        self.mix = nn.Sequential(nn.Linear(model_dim + 1, model_dim), nn.GELU(), nn.Linear(model_dim, model_dim))

    def forward(self, aptitude: torch.Tensor, task_embeddings: torch.Tensor) -> torch.Tensor:
        tasks = self.task(task_embeddings)  # tasks x dim
        level = aptitude.mean(dim=1, keepdim=True)  # overall ability
        strengths = (aptitude - level) @ tasks / aptitude.shape[1]  # where it is stronger or weaker than itself
        return self.mix(torch.cat([strengths, level], dim=1))


class ModelSatScorer(nn.Module):
    def __init__(self, text_dim: int, config: ModelSatConfig) -> None:
        super().__init__()
        self.encoder = CapabilityEncoder(text_dim, config.model_dim)
        self.query = nn.Linear(text_dim, config.model_dim)
        self.head = nn.Sequential(
            nn.Linear(3 * config.model_dim, config.hidden),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, 1),
        )

    def logits(self, queries: torch.Tensor, models: torch.Tensor) -> torch.Tensor:
        """(batch x models) logits from query vectors and model embeddings."""
        q = self.query(queries)[:, None, :].expand(-1, models.shape[0], -1)
        m = models[None, :, :].expand(q.shape[0], -1, -1)
        return self.head(torch.cat([q * m, q, m], dim=-1)).squeeze(-1)


def aptitude_vectors(item_outcomes: npt.NDArray[np.float64]) -> FloatArray:
    """(models x tasks) accuracy from (models x tasks x items) outcomes; a task never answered gets the model's mean."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a task or model with no answers gives NaN, handled below
        per_task = np.nanmean(item_outcomes, axis=2)
        overall = np.nanmean(per_task, axis=1, keepdims=True)
    overall = np.where(np.isnan(overall), 0.5, overall)
    return np.where(np.isnan(per_task), overall, per_task).astype(np.float32)


def evidence_trust(records: npt.ArrayLike, pseudo_count: float) -> npt.NDArray[np.float64]:
    """n / (n + pseudo_count) per model, n = the model's training records beyond the aptitude items.

    Scored zero-shot (n = 0: a model the scorer never saw, or saw only on the aptitude items), Model-SAT
    overrated new models across the onboarding sweep: a new model close to a strong one took traffic the oracle
    would not give it. So the scorer weighs in only as far as it was trained on the model's own outcomes.
    """
    n = np.maximum(np.asarray(records, np.float64), 0.0)
    if pseudo_count <= 0:
        return np.where(n > 0, 1.0, 0.0)
    return n / (n + pseudo_count)


def novelty_trust(aptitude: FloatArray, reference: FloatArray, scale: float) -> npt.NDArray[np.float64]:
    """exp(-(d / scale)^2) per row of `aptitude`, d = RMS distance (over tasks) to the nearest `reference` row.

    A model unlike every training model (stronger than all of them, say) is where the scorer extrapolates, so its
    scores weigh less there; a training model (d = 0) keeps full weight.
    """
    a, r = np.asarray(aptitude, np.float64), np.asarray(reference, np.float64)
    if not len(r):
        return np.zeros(len(a))
    distance = np.sqrt(((a[:, None, :] - r[None, :, :]) ** 2).mean(axis=2)).min(axis=1)
    return np.exp(-((distance / scale) ** 2))


def expected_calibration_error(p: npt.NDArray[np.float64], y: npt.NDArray[np.float64], bins: int = 15) -> float:
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(p[inside].mean() - y[inside].mean())
    return float(error)


class ModelSat:
    """A trained scorer with its task embeddings and calibration, ready to score queries against models."""

    def __init__(
        self,
        scorer: ModelSatScorer,
        task_embeddings: FloatArray,
        calibration: tuple[float, float],
        config: ModelSatConfig,
        device: str = "cpu",
        reference_aptitude: FloatArray | None = None,
        heads: ModelHeads | None = None,
    ) -> None:
        self.device = device
        self.scorer = scorer.to(device).eval()
        self.task_embeddings = torch.as_tensor(task_embeddings, dtype=torch.float32, device=device)
        self.calibration = calibration
        self.config = config
        # The aptitude vectors of the models it was trained on: how far a new model is from them says how much
        # its predictions for that model can be trusted (None for checkpoints saved before this was kept).
        self.reference_aptitude = reference_aptitude
        # Per-model heads trained with the scorer on the same records, blended into stage 1 (None: none trained).
        self.heads = heads

    def trust(self, aptitude: FloatArray, scale: float) -> npt.NDArray[np.float64]:
        """Per model, exp(-(d / scale)^2) with d the RMS distance to the nearest training model's aptitude vector."""
        if self.reference_aptitude is None or scale <= 0:
            return np.ones(len(aptitude))
        return novelty_trust(aptitude, self.reference_aptitude, scale)

    @torch.inference_mode()
    def embed_models(self, aptitude: FloatArray) -> torch.Tensor:
        return self.scorer.encoder(
            torch.as_tensor(aptitude, dtype=torch.float32, device=self.device), self.task_embeddings
        )

    @torch.inference_mode()
    def predict(self, query_vectors: FloatArray, model_embeddings: torch.Tensor) -> npt.NDArray[np.float64]:
        """Calibrated P(correct), (queries x models)."""
        queries = torch.as_tensor(query_vectors, dtype=torch.float32, device=self.device)
        logits = self.scorer.logits(queries, model_embeddings)
        scale, bias = self.calibration
        return torch.sigmoid(logits * scale + bias).double().cpu().numpy()

    def save(self, path: Path, metadata: dict[str, Any] | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "config": asdict(self.config),
                "state_dict": self.scorer.state_dict(),
                "task_embeddings": self.task_embeddings.cpu(),
                "calibration": self.calibration,
                "reference_aptitude": None
                if self.reference_aptitude is None
                else torch.as_tensor(self.reference_aptitude),
                "heads": None if self.heads is None else self.heads.to_tensors(),
                "metadata": metadata or {},
            },
            path,
        )

    @classmethod
    def load(cls, path: Path | IO[bytes], device: str = "auto") -> ModelSat:
        """From a file or a binary stream (weights read from the database)."""
        blob = torch.load(path, map_location="cpu", weights_only=True)
        config = ModelSatConfig(**blob["config"])
        tasks = blob["task_embeddings"]
        scorer = ModelSatScorer(int(tasks.shape[1]), config)
        scorer.load_state_dict(blob["state_dict"])
        reference = blob.get("reference_aptitude")
        heads = blob.get("heads")
        return cls(
            scorer,
            tasks.numpy(),
            tuple(blob["calibration"]),
            config,
            resolve_device(device),
            None if reference is None else reference.numpy(),
            None if heads is None else ModelHeads.from_tensors(heads),
        )


def _grouped_loss(
    logits: torch.Tensor, targets: torch.Tensor, config: ModelSatConfig, generator: torch.Generator
) -> torch.Tensor:
    """Per model: softmax over groups of 1 right and k-1 wrong queries, the right one should win."""
    losses = []
    negatives_needed = config.group_size - 1
    for model in range(logits.shape[1]):
        column = targets[:, model]
        right = torch.nonzero(column == 1).squeeze(1)
        wrong = torch.nonzero(column == 0).squeeze(1)
        if len(right) == 0 or len(wrong) < negatives_needed:
            continue
        pick_right = right[torch.randint(len(right), (config.groups_per_model,), generator=generator)]
        pick_wrong = wrong[torch.randint(len(wrong), (config.groups_per_model, negatives_needed), generator=generator)]
        group = torch.cat([logits[pick_right, model][:, None], logits[pick_wrong, model]], dim=1)
        losses.append(
            nn.functional.cross_entropy(group, torch.zeros(len(group), dtype=torch.long, device=logits.device))
        )
    return torch.stack(losses).mean() if losses else logits.sum() * 0.0


def fit_platt(logits: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> tuple[float, float]:
    """(scale, bias) of sigmoid(scale * logit + bias) fitted to outcomes y by maximum likelihood (Platt scaling)."""
    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    x = torch.as_tensor(logits, dtype=torch.float64)
    t = torch.as_tensor(y, dtype=torch.float64)
    optimiser = torch.optim.LBFGS([params], max_iter=100)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(x * params[0] + params[1], t)
        loss.backward()
        return loss

    optimiser.step(closure)
    fitted = params.detach()
    return float(fitted[0]), float(fitted[1])


def train_model_sat(
    query_vectors: FloatArray,
    outcomes: npt.NDArray[np.float64],
    item_outcomes: npt.NDArray[np.float64],
    task_embeddings: FloatArray,
    config: ModelSatConfig | None = None,
    device: str = "auto",
    log: Callable[[str], None] | None = None,
    validation_rows: npt.NDArray[np.int64] | None = None,
) -> tuple[ModelSat, dict[str, float]]:
    """query_vectors (N x d), outcomes (N x M, NaN = unknown), item_outcomes (M x tasks x items, NaN = unknown).

    validation_rows: held out for early stopping and calibration (default: a random share).
    """
    config = config or ModelSatConfig()
    device = resolve_device(device)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)

    n = len(query_vectors)
    if validation_rows is None:
        order = rng.permutation(n)
        validation_rows = order[: max(1, int(n * config.validation_share))]
    val_idx = np.asarray(validation_rows, dtype=np.int64)
    fit_idx = np.setdiff1d(np.arange(n), val_idx)
    queries = torch.as_tensor(query_vectors, dtype=torch.float32, device=device)
    targets = torch.as_tensor(np.nan_to_num(outcomes, nan=-1.0), dtype=torch.float32, device=device)
    tasks = torch.as_tensor(task_embeddings, dtype=torch.float32, device=device)
    items = np.asarray(item_outcomes, dtype=np.float64)
    full_aptitude = torch.as_tensor(aptitude_vectors(items), device=device)

    scorer = ModelSatScorer(query_vectors.shape[1], config).to(device)
    optimiser = torch.optim.AdamW(scorer.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def validation_logits() -> torch.Tensor:
        scorer.eval()
        with torch.inference_mode():
            out = scorer.logits(queries[val_idx], scorer.encoder(full_aptitude, tasks))
        scorer.train()
        return out

    val_targets = targets[val_idx]
    val_known = val_targets >= 0
    best_loss, best_state, stale, epochs_run = float("inf"), None, 0, 0
    for epoch in range(config.epochs):
        epochs_run = epoch + 1
        shuffled = fit_idx[rng.permutation(len(fit_idx))]
        for start in range(0, len(shuffled), config.batch_queries):
            batch = shuffled[start : start + config.batch_queries]
            resample = rng.integers(0, items.shape[2], size=items.shape)
            aptitude = torch.as_tensor(aptitude_vectors(np.take_along_axis(items, resample, axis=2)), device=device)
            logits = scorer.logits(queries[batch], scorer.encoder(aptitude, tasks))
            batch_targets = targets[batch]
            known = batch_targets >= 0
            bce = nn.functional.binary_cross_entropy_with_logits(logits[known], batch_targets[known])
            loss = _grouped_loss(logits, batch_targets, config, generator) + config.bce_weight * bce
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        val_logits = validation_logits()
        val_loss = float(nn.functional.binary_cross_entropy_with_logits(val_logits[val_known], val_targets[val_known]))
        if log:
            log(f"epoch {epoch + 1}: validation BCE {val_loss:.4f}")
        if val_loss < best_loss - 1e-4:
            best_loss, stale = val_loss, 0
            best_state = {k: v.detach().clone() for k, v in scorer.state_dict().items()}
        else:
            stale += 1
            if stale >= config.patience:
                break
    if best_state is not None:
        scorer.load_state_dict(best_state)

    logits_np = validation_logits()[val_known].double().cpu().numpy()
    y_np = val_targets[val_known].double().cpu().numpy()
    calibration = fit_platt(logits_np, y_np)
    raw = 1 / (1 + np.exp(-logits_np))
    calibrated = 1 / (1 + np.exp(-(logits_np * calibration[0] + calibration[1])))
    val_matrix = validation_logits().cpu().numpy()
    chosen = val_matrix.argmax(axis=1)
    val_outcomes = outcomes[val_idx]
    metrics = {
        "validation_bce": best_loss,
        "ece_raw": expected_calibration_error(raw, y_np),
        "ece_calibrated": expected_calibration_error(calibrated, y_np),
        "validation_top1_accuracy": float(np.nanmean(val_outcomes[np.arange(len(chosen)), chosen])),
        "validation_best_model_accuracy": float(np.nanmax(np.nanmean(val_outcomes, axis=0))),
        "epochs": float(epochs_run),
        "train_seconds": time.perf_counter() - started,
        "train_queries": float(len(fit_idx)),
        "models": float(outcomes.shape[1]),
    }
    sat = ModelSat(scorer, task_embeddings, calibration, config, device, aptitude_vectors(items))
    return sat, metrics
