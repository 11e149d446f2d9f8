"""Writes the demo sample in data/ from the shared development data (Apache-2.0 families only).

Usage: python scripts/make_demo_sample.py ../shared/data data [--per-family 400]
Queries are picked by hashed id, so the sample is the same on every run.
"""

import argparse
import csv
import gzip
import hashlib
import shutil
from pathlib import Path

APACHE_FAMILIES = ("mmlu_pro", "zeroeval")


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _write(path: Path, fields: list[str], rows: list[dict[str, str]]) -> None:
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--per-family", type=int, default=400)
    args = parser.parse_args()
    for family in APACHE_FAMILIES:
        out = args.target / family
        out.mkdir(parents=True, exist_ok=True)
        fields, queries = _rows(args.source / family / "queries.csv.gz")
        queries.sort(key=lambda q: hashlib.sha256(q["query_id"].encode()).hexdigest())
        picked = queries[: args.per_family]
        keep = {q["query_id"] for q in picked}
        _write(out / "queries.csv.gz", fields, picked)
        outcome_fields, outcomes = _rows(args.source / family / "outcomes.csv.gz")
        _write(out / "outcomes.csv.gz", outcome_fields, [o for o in outcomes if o["query_id"] in keep])
        shutil.copy(args.source / family / "models.csv", out / "models.csv")
        print(f"{family}: {len(picked)} queries")


if __name__ == "__main__":
    main()
