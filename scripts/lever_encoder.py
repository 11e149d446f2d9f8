"""The fine-tuned encoder lever, by cross-validation: does MiniLM tuned on routing outcomes route better?

    CAPPROF_DATA_DIR=... .venv/bin/python scripts/lever_encoder.py --benchmark mmlu_pro --splits 3 \
        [--layers 2] [--epochs 2] [--lr 5e-5] [--json docs/results/lever-encoder-mmlu_pro.json]

Per split (the harness's seeds and splits), the top `--layers` transformer layers of all-MiniLM-L6-v2 are trained,
with one logistic output per model, to predict every model's correctness on the split's training queries outside
the validation rows (the multi-label form of the per-model heads; RouterDC's contrastive loss pulls a query towards
the models that answer it, this loss asks the same of its embedding). The layers below stay frozen, so their output
is computed once per family and training costs a fraction of a full fine-tune: what makes the lever measurable on
two CPU cores. Every text the harness embeds (queries, capability and domain exemplars, aptitude task
descriptions) then goes through the tuned encoder, and capprof is trained and scored as `scripts/lever_heads.py`
does, beside the same pipeline on the untuned encoder. Prints, per heads' share h, capprof's accuracy at lambda 0
against best_single and the plain kNN (k = 100), and its cost share at best-single accuracy, for both encoders.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from lever_heads import one_split, print_shares  # noqa: E402

from profiling.embedder import SentenceEmbedder, Vectors, text_hash  # noqa: E402
from profiling.embedding_cache import CachedEmbedder  # noqa: E402
from service.jobs import evaluate as harness  # noqa: E402
from service.settings import Settings  # noqa: E402

BATCH = 32


class TopLayers(nn.Module):
    """The encoder's top layers, mean pooling and normalisation, applied to the frozen layers' cached output."""

    def __init__(self, embedder: SentenceEmbedder, layers: int) -> None:
        super().__init__()
        bert: Any = embedder._model[0].auto_model  # transformers' BertModel: untyped attributes
        self.owner = embedder  # the SentenceEmbedder whose BERT these layers belong to
        self.bert: Any = bert
        self.layers = nn.ModuleList(bert.encoder.layer[-layers:])

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attention, _ = self.bert._create_attention_masks(
            attention_mask=mask,
            encoder_attention_mask=None,
            embedding_output=hidden,
            encoder_hidden_states=None,
            cache=None,
            position_ids=None,
        )
        for layer in self.layers:
            hidden = layer(hidden, attention)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1)


def frozen_states(embedder: SentenceEmbedder, texts: Sequence[str], layers: int) -> list[torch.Tensor]:
    """Per text, the (tokens x 384) input to the top `layers` layers: computed once, reused by every split."""
    model = embedder._model
    bert: Any = model[0].auto_model
    tokenizer = model.tokenizer
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    states: list[torch.Tensor | None] = [None] * len(texts)
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(order), 64):
            chunk = order[start : start + 64]
            tokens = tokenizer(
                [texts[i] for i in chunk],
                padding=True,
                truncation=True,
                max_length=model.max_seq_length,
                return_tensors="pt",
            )
            out = bert(**tokens, output_hidden_states=True)
            hidden = out.hidden_states[len(out.hidden_states) - 1 - layers]
            for row, i in enumerate(chunk):
                length = int(tokens["attention_mask"][row].sum())
                states[i] = hidden[row, :length].clone()
    print(f"  frozen layers over {len(texts)} texts: {time.perf_counter() - started:.0f} s", flush=True)
    return [s for s in states if s is not None]


def padded(states: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(s.shape[0] for s in states)
    hidden = torch.zeros((len(states), longest, states[0].shape[1]))
    mask = torch.zeros((len(states), longest), dtype=torch.long)
    for row, s in enumerate(states):
        hidden[row, : s.shape[0]] = s
        mask[row, : s.shape[0]] = 1
    return hidden, mask


def pooled(top: TopLayers, states: Sequence[torch.Tensor], rows: Sequence[int]) -> torch.Tensor:
    """The tuned (or untuned) embeddings of `rows`, in batches of similar length."""
    order = sorted(rows, key=lambda i: states[i].shape[0])
    out = torch.zeros((len(states), states[0].shape[1]))
    with torch.no_grad():
        for start in range(0, len(order), 128):
            chunk = order[start : start + 128]
            out[chunk] = top(*padded([states[i] for i in chunk]))
    return out[list(rows)]


def masked_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    known = ~torch.isnan(target)
    return nn.functional.binary_cross_entropy_with_logits(logits[known], (target[known] >= 0.5).float())


def fit_head(vectors: torch.Tensor, target: torch.Tensor) -> nn.Linear:
    """A logistic output per model on the untuned embeddings, to start from (random outputs would send noise into
    the encoder's first steps)."""
    head = nn.Linear(vectors.shape[1], target.shape[1])
    optimiser = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(300):
        optimiser.zero_grad()
        loss = masked_bce(head(vectors), target) + 1e-4 * (head.weight**2).sum()
        loss.backward()
        optimiser.step()
    return head


def tune(
    base: SentenceEmbedder,
    states: Sequence[torch.Tensor],
    fit_rows: Sequence[int],
    outcomes: npt.NDArray[np.float64],
    check_rows: Sequence[int],
    check_outcomes: npt.NDArray[np.float64],
    args: argparse.Namespace,
    seed: int,
) -> tuple[TopLayers, list[dict[str, float]]]:
    """A tuned copy of the encoder's top layers; `check_rows` (the validation rows) pick the epoch kept."""
    torch.manual_seed(seed)
    embedder = SentenceEmbedder("cpu", base.batch_size)  # a fresh copy of the untuned weights
    top = TopLayers(embedder, args.layers)
    target = torch.as_tensor(outcomes, dtype=torch.float32)
    fit_index = {r: n for n, r in enumerate(fit_rows)}
    head = fit_head(pooled(top, states, fit_rows), target[[fit_index[r] for r in fit_rows]])
    check_target = torch.as_tensor(check_outcomes, dtype=torch.float32)
    optimiser = torch.optim.AdamW(
        [
            {"params": top.layers.parameters(), "lr": args.lr},
            {"params": head.parameters(), "lr": args.head_lr},
        ],
        weight_decay=0.01,
    )
    history: list[dict[str, float]] = []
    top.eval()
    with torch.no_grad():
        best_loss = float(masked_bce(head(pooled(top, states, check_rows)), check_target))
    print(f"    before tuning: validation log-loss {best_loss:.4f}", flush=True)
    best_state = copy.deepcopy(top.layers.state_dict())
    generator = np.random.default_rng(seed)
    for epoch in range(args.epochs):
        started = time.perf_counter()
        top.train()
        by_length = sorted(fit_rows, key=lambda i: states[i].shape[0])
        batches = [by_length[s : s + BATCH] for s in range(0, len(by_length), BATCH)]
        generator.shuffle(batches)
        total = 0.0
        for batch in batches:
            optimiser.zero_grad()
            z = top(*padded([states[i] for i in batch]))
            loss = masked_bce(head(z), target[[fit_index[i] for i in batch]])
            loss.backward()
            optimiser.step()
            total += float(loss) * len(batch)
        top.eval()
        with torch.no_grad():
            check = float(masked_bce(head(pooled(top, states, check_rows)), check_target))
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": total / len(fit_rows),
                "validation_loss": check,
                "seconds": time.perf_counter() - started,
            }
        )
        print(
            f"    epoch {epoch + 1}: train log-loss {total / len(fit_rows):.4f}, validation {check:.4f}, "
            f"{history[-1]['seconds']:.0f} s",
            flush=True,
        )
        if check < best_loss:
            best_loss, best_state = check, copy.deepcopy(top.layers.state_dict())
    top.layers.load_state_dict(best_state)
    return top, history


class TunedEmbedder:
    """Queries of the family from the tuned top layers over their cached states; any other text (exemplars, task
    descriptions) through the whole tuned encoder, so every vector the harness compares comes from one encoder."""

    name = "all-MiniLM-L6-v2-tuned"
    dimension = 384

    def __init__(self, model: SentenceEmbedder, table: dict[str, Vectors]) -> None:
        self.model, self.table = model, table

    def embed(self, texts: Sequence[str]) -> Vectors:
        hashes = [text_hash(t) for t in texts]
        missing = {h: t for h, t in zip(hashes, texts, strict=True) if h not in self.table}
        if missing:
            self.table.update(zip(missing, self.model.embed(list(missing.values())), strict=True))
        return np.stack([self.table[h] for h in hashes]).astype(np.float32)


def embedder_of(top: TopLayers, texts: Sequence[str], states: Sequence[torch.Tensor]) -> CachedEmbedder:
    vectors = pooled(top, states, range(len(texts))).numpy()
    table = {text_hash(t): v for t, v in zip(texts, vectors, strict=True)}
    return CachedEmbedder(TunedEmbedder(top.owner, table), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--benchmark", required=True)
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--only", type=int, nargs="+", help="run only these of the splits (seeds)")
    parser.add_argument("--layers", type=int, default=2, help="top transformer layers trained (of 6)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-5, help="learning rate of the encoder layers")
    parser.add_argument("--head-lr", type=float, default=1e-3, help="learning rate of the per-model outputs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    settings = Settings()
    base = SentenceEmbedder("cpu", settings.embed_batch_size)
    family, _ = harness.load_split(args.data, args.benchmark, 0, None)
    texts = [q.text for q in family.queries]
    states = frozen_states(base, texts, args.layers)
    untuned = TopLayers(base, args.layers).eval()
    results: list[dict[str, Any]] = []
    for seed in args.only if args.only is not None else range(args.splits):
        print(f"split {seed}", flush=True)
        _, split = harness.load_split(args.data, args.benchmark, seed, None)
        validation = set(harness.sat_validation_rows(split, seed))
        visible = harness.visible_training_outcomes(split, [], set())
        kept = [r for r, i in enumerate(split.train_rows) if i not in validation]
        fit_rows = [split.train_rows[r] for r in kept]
        check_rows = sorted(validation)
        top, history = tune(base, states, fit_rows, visible[kept], check_rows, split.outcomes[check_rows], args, seed)
        before = one_split(args.data, args.benchmark, seed, settings, embedder_of(untuned, texts, states), None)
        after = one_split(args.data, args.benchmark, seed, settings, embedder_of(top, texts, states), None)
        results.append({"seed": seed, "history": history, "untuned": before, "tuned": after})
        print(
            f"  heads' test log-loss: untuned {before['heads_test_log_loss']:.4f}, "
            f"tuned {after['heads_test_log_loss']:.4f}",
            flush=True,
        )
    print(f"{args.benchmark}, {args.splits} splits, top {args.layers} layers, {args.epochs} epochs, lr {args.lr}")
    for label in ("untuned", "tuned"):
        print(f"  {label} encoder")
        print_shares([r[label] for r in results], "    ")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"benchmark": args.benchmark, "args": vars(args) | {"data": None, "json": None}, "splits": results},
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
