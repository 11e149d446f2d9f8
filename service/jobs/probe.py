"""`capprof probe`: do query profiles agree with a person? Top-1 capability and domain against a labelled probe
set of everyday queries (data/probe/everyday_queries.jsonl), including queries outside every loaded domain."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from profiling.labels import readable_label
from profiling.query_profile import DOMAIN, QueryProfiler
from service.store.orm import Dimension, EvalQuery

NONE = "none"


@dataclass(frozen=True)
class ProbeItem:
    text: str
    capability: str
    domain: str  # a coarse domain, or "none" when the query is about none of the loaded domains


@dataclass
class ProbeReport:
    items: int = 0
    capability_top1: float = 0.0
    in_domain_items: int = 0
    domain_top1: float = 0.0  # among in-domain items whose domain is loaded
    out_of_domain_items: int = 0
    none_recognised: float = 0.0  # share of out-of-domain items given no domain
    in_domain_given_none: float = 0.0  # share of in-domain items wrongly given no domain
    confusions: dict[str, int] = field(default_factory=dict)  # "expected -> got" for capabilities


def read_probe(path: Path) -> list[ProbeItem]:
    items = []
    for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
                items.append(ProbeItem(row["text"], row["capability"], row["domain"]))
            except (json.JSONDecodeError, KeyError) as exc:
                raise ValueError(f"{path}:{number}: not a probe item ({exc})") from exc
    return items


def domain_families(session: Session) -> dict[str, set[str]]:
    """Loaded domain -> the dimension names that count as it: itself, and the subjects filed under it in the data."""
    families: dict[str, set[str]] = {
        name: {name}
        for name in session.scalars(
            select(Dimension.name).where(Dimension.kind == DOMAIN, Dimension.catch_all.is_(False))
        )
    }
    for domain, subject in session.execute(select(EvalQuery.domain, EvalQuery.subject).distinct()):
        if not domain:
            continue
        names = families.setdefault(readable_label(domain), {readable_label(domain)})
        if subject:
            names.add(readable_label(subject))
    return families


def probe(
    profiler: QueryProfiler, vectors: np.ndarray, items: list[ProbeItem], families: dict[str, set[str]]
) -> ProbeReport:
    weights, votes, nearest = profiler.profile_vectors(vectors)
    report = ProbeReport(items=len(items))
    confusions: Counter[str] = Counter()
    capability_hits = domain_hits = none_hits = false_none = 0
    for row, item in enumerate(items):
        profile = profiler.describe(weights[row], votes[row], float(nearest[row]))
        capability = profile.capabilities[0].name if profile.capabilities else NONE
        if capability == item.capability:
            capability_hits += 1
        else:
            confusions[f"{item.capability} -> {capability}"] += 1
        domain = profile.domains[0].name if profile.domains else NONE
        expected = NONE if item.domain == NONE else readable_label(item.domain)
        if expected == NONE or expected not in families:
            report.out_of_domain_items += 1
            none_hits += domain == NONE
        else:
            report.in_domain_items += 1
            domain_hits += domain in families[expected]
            false_none += domain == NONE
    report.capability_top1 = capability_hits / max(1, len(items))
    report.domain_top1 = domain_hits / max(1, report.in_domain_items)
    report.none_recognised = none_hits / max(1, report.out_of_domain_items)
    report.in_domain_given_none = false_none / max(1, report.in_domain_items)
    report.confusions = dict(confusions.most_common())
    return report
