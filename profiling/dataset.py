"""Reads and validates a data folder in the shared format (queries, outcomes, models per family)."""

from __future__ import annotations

import csv
import gzip
import io
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

QUERY_COLUMNS = ("query_id", "benchmark", "domain", "subject", "text")
OUTCOME_COLUMNS = ("query_id", "model", "score", "cost_usd", "output_tokens")
MODEL_COLUMNS = ("model", "input_usd_per_mtok", "output_usd_per_mtok")
FILES = ("queries.csv.gz", "outcomes.csv.gz", "models.csv")

csv.field_size_limit(16 * 1024 * 1024)

# What the database accepts, checked here so a bad value is refused with its file, line and column instead of
# failing inside the database's bulk write (issue 10): lengths of the String columns, a 32-bit INTEGER for tokens,
# and bounds that keep sums and averages of costs finite.
MAX_LENGTHS = {"model": 200, "query_id": 200, "benchmark": 100, "domain": 200, "subject": 200, "price_basis": 100}
MAX_TOKENS = 2**31 - 1
MAX_PRICE_USD_PER_MTOK = 10_000.0
MAX_COST_USD = 1_000.0
_BAD_TEXT = re.compile("[\udc80-\udcff\x00]")


class DatasetError(ValueError):
    """A bad data file, with the place that is wrong."""

    def __init__(self, path: Path, line: int | None, column: str | None, problem: str) -> None:
        self.path, self.line, self.column, self.problem = path, line, column, problem
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column '{column}'"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class ModelRow:
    name: str
    input_usd_per_mtok: float | None
    output_usd_per_mtok: float | None
    price_basis: str | None = None
    source: str | None = None
    provider: str | None = None  # who serves or made it (exclude_providers filters on it)
    endpoint_url: str | None = None
    upstream_model: str | None = None
    api_key_env: str | None = None


@dataclass(frozen=True)
class QueryRow:
    query_id: str
    benchmark: str
    domain: str
    subject: str
    text: str
    answer: str | None = None


@dataclass(frozen=True)
class OutcomeRow:
    query_id: str
    model: str
    score: float
    cost_usd: float | None
    output_tokens: int | None


@dataclass
class Family:
    """One benchmark family's validated rows."""

    name: str
    path: Path
    models: list[ModelRow]
    queries: list[QueryRow]
    outcomes: list[OutcomeRow]
    missing_scores: int = 0
    stats: dict[str, int] = field(default_factory=dict)


def find_families(path: Path) -> list[Path]:
    """A family folder itself, or the family folders directly inside a data folder."""
    if (path / FILES[0]).exists():
        return [path]
    found = sorted(p for p in path.iterdir() if p.is_dir() and (p / FILES[0]).exists()) if path.is_dir() else []
    if not found:
        raise DatasetError(path, None, None, f"no family folder here (expected {', '.join(FILES)})")
    return found


def _open_text(path: Path) -> io.TextIOBase:
    if not path.exists():
        raise DatasetError(path, None, None, "file not found")
    # surrogateescape: a byte that is not UTF-8 is kept (as a lone surrogate) and reported by _check_text with the
    # line of the record that holds it; a strict decoder fails on whole read-ahead chunks, naming the wrong line.
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="surrogateescape", newline="")
    return open(path, encoding="utf-8", errors="surrogateescape", newline="")  # noqa: SIM115


def _check_text(path: Path, line: int, column: str | None, value: str) -> None:
    """Refuse bytes that are not UTF-8 and NUL characters (no database stores them in text)."""
    found = _BAD_TEXT.search(value)
    if found is None:
        return
    position, char = found.start(), found.group()
    if char == "\x00":
        raise DatasetError(path, line, column, f"NUL character at character {position + 1}")
    byte = ord(char) - 0xDC00
    raise DatasetError(path, line, column, f"not valid UTF-8: byte 0x{byte:02x} at character {position + 1}")


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number where the record starts, row) for each record, after checking the header."""
    with _open_text(path) as handle:
        reader = csv.DictReader(handle)
        try:
            header = reader.fieldnames
        except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
            raise DatasetError(path, 1, None, f"unreadable: {exc}") from exc
        if not header:
            raise DatasetError(path, 1, None, "empty file (no header row)")
        for name in header:
            _check_text(path, 1, None, name)
        for column in required:
            if column not in header:
                raise DatasetError(path, 1, column, f"missing column (header has: {', '.join(header)})")
        start = reader.line_num + 1
        count = 0
        try:
            for row in reader:
                if None in row or any(row[c] is None for c in required):
                    raise DatasetError(path, start, None, "wrong number of fields")
                for column, value in row.items():
                    _check_text(path, start, column, value)
                    limit = MAX_LENGTHS.get(column)
                    if limit is not None and len(value.strip()) > limit:
                        raise DatasetError(path, start, column, f"longer than {limit} characters ({len(value)})")
                yield start, row
                count += 1
                start = reader.line_num + 1
        except (csv.Error, EOFError, OSError, UnicodeDecodeError) as exc:
            raise DatasetError(path, start, None, f"unreadable: {exc}") from exc
        if count == 0:
            raise DatasetError(path, 2, None, "empty file (header but no rows)")


def _optional_float(path: Path, line: int, column: str, value: str, most: float | None = None) -> float | None:
    if value.strip() == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise DatasetError(path, line, column, f"not a number: {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise DatasetError(path, line, column, f"must be a finite number >= 0, got {value!r}")
    if most is not None and number > most:
        shown = f"{most:.0f}" if most == int(most) else f"{most:g}"
        raise DatasetError(path, line, column, f"must be at most {shown}, got {value!r}")
    return number


ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _upstream(path: Path, line: int, row: dict[str, str]) -> dict[str, str | None]:
    """Optional gateway columns: an http(s) base URL, the upstream's model name, the NAME of the key's env var."""
    values = {c: (row.get(c) or "").strip() or None for c in ("endpoint_url", "upstream_model", "api_key_env")}
    url, env = values["endpoint_url"], values["api_key_env"]
    if url is not None and not url.startswith(("http://", "https://")):
        raise DatasetError(path, line, "endpoint_url", f"must be an http(s) URL, got {url!r}")
    if env is not None and not ENV_NAME.match(env):
        raise DatasetError(path, line, "api_key_env", "must be an environment variable NAME (not the key itself)")
    return values


def read_models(path: Path) -> list[ModelRow]:
    models: dict[str, ModelRow] = {}
    for line, row in _rows(path, MODEL_COLUMNS):
        name = row["model"].strip()
        if not name:
            raise DatasetError(path, line, "model", "empty model name")
        if name in models:
            raise DatasetError(path, line, "model", f"duplicate model {name!r}")
        models[name] = ModelRow(
            name=name,
            input_usd_per_mtok=_optional_float(
                path, line, "input_usd_per_mtok", row["input_usd_per_mtok"], MAX_PRICE_USD_PER_MTOK
            ),
            output_usd_per_mtok=_optional_float(
                path, line, "output_usd_per_mtok", row["output_usd_per_mtok"], MAX_PRICE_USD_PER_MTOK
            ),
            price_basis=(row.get("price_basis") or None),
            source=(row.get("source") or None),
            provider=((row.get("provider") or "").strip() or None),
            **_upstream(path, line, row),
        )
    return list(models.values())


def read_queries(path: Path) -> list[QueryRow]:
    queries: dict[str, QueryRow] = {}
    for line, row in _rows(path, QUERY_COLUMNS):
        query_id = row["query_id"].strip()
        if not query_id:
            raise DatasetError(path, line, "query_id", "empty query id")
        if query_id in queries:
            raise DatasetError(path, line, "query_id", f"duplicate query id {query_id!r}")
        if not row["text"].strip():
            raise DatasetError(path, line, "text", "empty query text")
        queries[query_id] = QueryRow(
            query_id,
            row["benchmark"].strip(),
            row["domain"].strip(),
            row["subject"].strip(),
            row["text"],
            (row.get("answer") or "").strip() or None,
        )
    return list(queries.values())


def read_outcomes(path: Path, known_models: set[str], known_queries: set[str]) -> tuple[list[OutcomeRow], int]:
    """Validated outcome rows and the number of rows whose score is blank (no outcome recorded)."""
    outcomes: list[OutcomeRow] = []
    seen: set[tuple[str, str]] = set()
    missing = 0
    for line, row in _rows(path, OUTCOME_COLUMNS):
        model, query_id = row["model"].strip(), row["query_id"].strip()
        if model not in known_models:
            raise DatasetError(path, line, "model", f"unknown model {model!r} (not in models.csv)")
        if query_id not in known_queries:
            raise DatasetError(path, line, "query_id", f"unknown query {query_id!r} (not in queries.csv.gz)")
        if (query_id, model) in seen:
            raise DatasetError(path, line, "query_id", f"duplicate outcome for ({query_id!r}, {model!r})")
        seen.add((query_id, model))
        score = _optional_float(path, line, "score", row["score"])
        if score is None:
            missing += 1
            continue
        if score > 1:
            raise DatasetError(path, line, "score", f"must be between 0 and 1, got {row['score']!r}")
        tokens = _optional_float(path, line, "output_tokens", row["output_tokens"], MAX_TOKENS)
        outcomes.append(
            OutcomeRow(
                query_id=query_id,
                model=model,
                score=score,
                cost_usd=_optional_float(path, line, "cost_usd", row["cost_usd"], MAX_COST_USD),
                output_tokens=None if tokens is None else int(tokens),
            )
        )
    return outcomes, missing


def read_family(path: Path) -> Family:
    """Every file of one family, fully validated before anything is written anywhere."""
    models = read_models(path / "models.csv")
    queries = read_queries(path / "queries.csv.gz")
    outcomes, missing = read_outcomes(path / "outcomes.csv.gz", {m.name for m in models}, {q.query_id for q in queries})
    return Family(path.name, path, models, queries, outcomes, missing_scores=missing)
