"""Shared dataset format for all grokbench tasks: vocabulary, facts table, Parquet file I/O.

A dataset is one table of facts (one row per fact) plus a vocabulary and a meta dict. Every task
(comparison, and later composition, k-hop, ...) produces the same columns, so the trainer and the
analysis never need to know which task a file came from.

On disk a dataset is a single Parquet file. The vocabulary and the meta dict are stored as JSON in
the Parquet schema metadata under `grokbench.vocab` and `grokbench.meta`. `meta["content_hash"]` is
a sha256 over a canonical serialization of the facts (see `content_hash`), not over the file, so it
survives re-encoding and is checked on every read. Writing is deterministic: the same dataset gives
a byte-identical file (for a fixed pyarrow version).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..io import atomic_path

PAD = "<pad>"
SPLITS = ("train", "test_inferred_id", "test_inferred_ood")
KINDS = ("atomic", "inferred")
GROUPS = ("id", "ood")

VOCAB_KEY = b"grokbench.vocab"
META_KEY = b"grokbench.meta"
HASH_FORMAT = b"grokbench.facts/1\0"  # prefix of the canonical serialization; bump if it changes

SCHEMA = pa.schema(
    [
        pa.field("split", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("group", pa.string(), nullable=False),
        pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("answer_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
    ]
)
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)
LIST_COLUMNS = ("input_ids", "answer_ids")

# Fixed Parquet writer settings: no option here depends on time, host or thread scheduling.
_PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "version": "2.6",
    "data_page_version": "1.0",
    "row_group_size": 1 << 20,
    "store_schema": True,
}


class Vocab:
    """An ordered list of token strings; a token's id is its position. Token 0 is always `<pad>`."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self.tokens: list[str] = list(tokens)
        if not self.tokens or self.tokens[0] != PAD:
            raise ValueError(f"vocab: token 0 must be {PAD!r}")
        self._index = {tok: i for i, tok in enumerate(self.tokens)}
        if len(self._index) != len(self.tokens):
            dup = next(t for t in self.tokens if self.tokens.count(t) > 1)
            raise ValueError(f"vocab: duplicate token {dup!r}")

    def id(self, tok: str) -> int:
        try:
            return self._index[tok]
        except KeyError:
            raise KeyError(f"token {tok!r} is not in the vocabulary") from None

    def encode(self, toks: Sequence[str]) -> list[int]:
        return [self.id(t) for t in toks]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[int(i)] for i in ids]

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.tokens == other.tokens

    __hash__ = None  # type: ignore[assignment]  # mutable-looking container: not hashable

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens)"


@dataclass
class Dataset:
    """Facts (columns `COLUMNS`), vocabulary, meta (task, params, generator_version, hash)."""

    facts: pd.DataFrame
    vocab: Vocab
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if tuple(self.facts.columns) != COLUMNS:
            raise ValueError(f"facts: columns must be {list(COLUMNS)}, got {list(self.facts.columns)}")


def facts_frame(columns: dict[str, Any]) -> pd.DataFrame:
    """A facts DataFrame with the columns in the canonical order and a plain RangeIndex."""
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"facts: missing columns {missing}")
    return pd.DataFrame({c: columns[c] for c in COLUMNS})


def facts_table(facts: pd.DataFrame) -> pa.Table:
    """The facts as an Arrow table with the explicit `SCHEMA` (no pandas index, no metadata)."""
    if tuple(facts.columns) != COLUMNS:
        raise ValueError(f"facts: columns must be {list(COLUMNS)}, got {list(facts.columns)}")
    arrays = [pa.array(facts[f.name], type=f.type, from_pandas=True) for f in SCHEMA]
    for f, arr in zip(SCHEMA, arrays, strict=True):
        if arr.null_count:
            raise ValueError(f"facts: column {f.name!r} has {arr.null_count} missing values")
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def _string_parts(arr: pa.StringArray) -> tuple[np.ndarray, bytes]:
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    raw = b"" if data is None else data.to_pybytes()[offsets[0] : offsets[-1]]
    return np.diff(offsets).astype("<i8"), raw


def content_hash(table: pa.Table) -> str:
    """sha256 over a canonical serialization of the facts content.

    Layout: `HASH_FORMAT`, the row count (int64 LE), then for each column in `COLUMNS` order: its
    name, a NUL byte, the per-row lengths (int64 LE; bytes for strings, items for lists), and the
    values (UTF-8 bytes for strings, int32 LE for token lists). Independent of Parquet encoding and
    of chunking.
    """
    h = hashlib.sha256(HASH_FORMAT)
    h.update(np.int64(table.num_rows).astype("<i8").tobytes())
    for name in COLUMNS:
        arr = table.column(name).combine_chunks()
        h.update(name.encode() + b"\0")
        if name in LIST_COLUMNS:
            h.update(np.diff(arr.offsets.to_numpy()).astype("<i8").tobytes())
            values = arr.flatten().to_numpy(zero_copy_only=False)
            h.update(values.astype("<i4").tobytes())
        else:
            lengths, raw = _string_parts(arr)
            h.update(lengths.tobytes())
            h.update(raw)
    return h.hexdigest()


def dataset_hash(facts: pd.DataFrame) -> str:
    """`content_hash` of a facts DataFrame."""
    return content_hash(facts_table(facts))


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def write_dataset(ds: Dataset, path: str | os.PathLike) -> None:
    """Write `ds` to one Parquet file at `path`, atomically and deterministically.

    The stored `meta["content_hash"]` is recomputed from the facts, so the file always carries the
    hash of its own content.
    """
    table = facts_table(ds.facts)
    meta = {**ds.meta, "content_hash": content_hash(table)}
    table = table.replace_schema_metadata({VOCAB_KEY: _dump(ds.vocab.tokens), META_KEY: _dump(meta)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **_PARQUET_OPTIONS)


def _table_to_frame(table: pa.Table) -> pd.DataFrame:
    cols = {
        name: table.column(name).to_pylist()
        if name in LIST_COLUMNS
        else table.column(name).to_pandas().to_numpy()
        for name in COLUMNS
    }
    return facts_frame(cols)


def read_dataset(path: str | os.PathLike) -> Dataset:
    """Read a dataset written by `write_dataset`; verify its format and its content hash."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise ValueError(f"{path}: not a grokbench dataset (cannot read Parquet: {e})") from e
    md = table.schema.metadata or {}
    if VOCAB_KEY not in md or META_KEY not in md:
        raise ValueError(f"{path}: not a grokbench dataset (no {VOCAB_KEY.decode()} metadata)")
    if not table.schema.equals(SCHEMA, check_metadata=False):
        raise ValueError(f"{path}: not a grokbench dataset (schema {table.schema} != {SCHEMA})")
    try:
        vocab = Vocab(json.loads(md[VOCAB_KEY]))
        meta = json.loads(md[META_KEY])
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: not a grokbench dataset (bad metadata: {e})") from e
    if not isinstance(meta, dict) or "content_hash" not in meta:
        raise ValueError(f"{path}: not a grokbench dataset (meta has no content_hash)")
    actual = content_hash(table.replace_schema_metadata(None))
    if actual != meta["content_hash"]:
        raise ValueError(
            f"{path}: content hash mismatch (meta says {meta['content_hash']}, facts hash to {actual})"
        )
    return Dataset(_table_to_frame(table), vocab, meta)
