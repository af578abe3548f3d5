"""One cache entry file: named CPU tensors in safetensors, with metadata and a checksum.

The metadata holds format, schema, stage, key, the key fields (canonical JSON), subject,
version and the BLAKE3 checksum of the tensors' names, dtypes, shapes and bytes. Decoding
checks all of it; any inconsistency is a ``CorruptEntry``. Nothing in it depends on when or
on which machine it was written, so two writers of one entry write the same bytes (creation
times live in the index; older entries may still carry a ``created`` field).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import blake3

from mimicache.cache.keys import StageKey, key_digest
from mimicache.errors import CacheError

if TYPE_CHECKING:
    import torch

__all__ = [
    "ENTRY_SUFFIX",
    "SCHEMA",
    "CorruptEntry",
    "Entry",
    "Lookup",
    "check_metadata",
    "data_damage",
    "decode_entry",
    "encode_entry",
    "entry_damage",
    "head_metadata",
    "header_length",
    "prepare_tensors",
    "raw_checksum",
    "read_metadata",
    "tensor_checksum",
]

SCHEMA = 1
"""On-disk format version; entries live under ``v<SCHEMA>/`` and other versions are ignored."""

ENTRY_SUFFIX = ".safetensors"
_RESERVED_META = frozenset(
    {"format", "stage", "key", "fields", "subject", "mimicache_version", "schema", "created"}
    | {"checksum"}
)
_MAX_HEADER = 100 << 20


class CorruptEntry(Exception):
    """An entry file that is not a sound entry (of the expected stage and key); says why."""


@dataclass(frozen=True)
class Entry:
    """A decoded entry: its tensors (CPU, contiguous), metadata and file size in bytes."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    size: int

    @property
    def subject(self) -> str | None:
        return self.metadata.get("subject") or None

    @property
    def created(self) -> float | None:
        try:
            return float(self.metadata["created"])
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True)
class Lookup:
    """What looking for an entry found: the entry, nothing, or a damaged file or object."""

    entry: Entry | None = None
    corrupt: bool = False


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    import torch

    flat = t.reshape(-1)
    if flat.dtype != torch.uint8:
        flat = flat.view(torch.uint8)
    return memoryview(flat.numpy())


def _layout_json(layout: dict[str, list[Any]]) -> bytes:
    """``canonical_json`` of ``{name: [dtype name, shape]}``, spelled directly (only strings
    and ints: nothing to normalise, and every read checks one)."""
    return json.dumps(layout, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def tensor_checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """BLAKE3 over the names, dtypes, shapes and bytes of ``tensors`` (CPU, contiguous)."""
    hasher = blake3.blake3()
    layout = {name: [str(t.dtype), [int(d) for d in t.shape]] for name, t in tensors.items()}
    hasher.update(_layout_json(layout))
    for name in sorted(tensors):
        hasher.update(_tensor_bytes(tensors[name]))
    return hasher.hexdigest()


def prepare_tensors(result: Any) -> dict[str, torch.Tensor]:
    """CPU, contiguous, detached tensors that own their storage (safetensors needs that)."""
    if not isinstance(result, Mapping):
        raise TypeError(
            f"cache compute function must return a dict of tensors, got {type(result).__name__}"
        )
    import torch

    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in result.items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor):
            raise TypeError(f"cache compute function returned {name!r}: {type(t).__name__}")
        t = t.detach().to("cpu").resolve_conj().resolve_neg().contiguous()
        if t.numel():
            storage = t.untyped_storage()
            if (
                storage.data_ptr() in seen
                or storage.nbytes() != t.numel() * t.element_size()
                or t.storage_offset()
            ):
                t = t.clone()
            seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    meta: dict[str, str] = {}
    for k, v in (metadata or {}).items():
        if k in _RESERVED_META or not isinstance(k, str) or not isinstance(v, str):
            raise CacheError(
                f"cache metadata {k!r}: keys must be strings other than "
                f"{sorted(_RESERVED_META)} and values strings"
            )
        meta[k] = v
    return meta


def encode_entry(
    stage: str,
    key: StageKey,
    tensors: dict[str, torch.Tensor],
    subject: str | None,
    metadata: Mapping[str, str] | None,
    version: str,
) -> tuple[bytes, dict[str, str]]:
    """The file bytes of an entry and the metadata they hold (``tensors`` as prepare_tensors
    returns them; ``metadata`` extra string fields)."""
    meta = check_metadata(metadata)
    meta.update(
        format="mimicache",
        schema=str(SCHEMA),
        stage=stage,
        key=key.digest,
        fields=key.canonical,
        subject=subject or "",
        mimicache_version=version,
        checksum=tensor_checksum(tensors),
    )
    from safetensors.torch import save as st_save

    return _canonical_header(st_save(tensors, metadata=meta)), meta


def _canonical_header(data: bytes) -> bytes:
    """The same file with its JSON header written with sorted keys (safetensors writes the
    metadata in hash-map order, which differs between processes), padded with spaces to a
    multiple of 8 bytes as safetensors pads it; the data section is unchanged."""
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8 : 8 + n]), sort_keys=True, separators=(",", ":"))
    raw = header.encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + data[8 + n :]


def decode_entry(
    data: bytes,
    stage: str | None = None,
    key: StageKey | None = None,
    *,
    checked: dict[str, str] | None = None,
) -> Entry:
    """The entry in ``data``; with ``stage``/``key``, also checks it is theirs.

    ``checked``: the metadata of these very bytes, already checked (they are not again).
    Raises CorruptEntry on any inconsistency (sizes, header, checksum, stage, key, fields).
    """
    meta = checked if checked is not None else _check(data)
    from safetensors.torch import load as st_load

    try:
        tensors = st_load(data)
    except Exception as exc:
        raise CorruptEntry(f"safetensors cannot read it: {exc}") from None
    if stage is not None and meta.get("stage") != stage:
        raise CorruptEntry("entry belongs to another stage or key")
    if key is not None:
        if meta.get("key") != key.digest:
            raise CorruptEntry("entry belongs to another stage or key")
        if meta.get("fields") != key.canonical:
            raise CorruptEntry("key fields differ from the entry's")
    return Entry(tensors, meta, len(data))


def entry_damage(path: Path, stage: str, key: str) -> str | None:
    """What is wrong with the entry file at ``path`` (filed under ``stage``/``key``), or None."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return str(exc)
    return data_damage(data, stage, key)


def data_damage(data: bytes, stage: str, key: str) -> str | None:
    """What is wrong with an entry file's bytes (filed under ``stage``/``key``), or None."""
    try:
        meta = _check(data)
        if meta.get("stage") != stage or meta.get("key") != key:
            return f"metadata says stage {meta.get('stage')!r} key {meta.get('key')!r}"
        if key_digest(json.loads(meta.get("fields", "null")) or {}) != key:
            return "key fields do not hash to the key"
    except (CorruptEntry, OSError, ValueError, AttributeError, TypeError) as exc:
        return str(exc)
    return None


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata in an entry file's header (cheap: reads only the header); {} if unreadable."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            head += f.read(max(header_length(head) - 8, 0))
    except OSError:
        return {}
    return head_metadata(head) or {}


def head_metadata(head: bytes) -> dict[str, str] | None:
    """The metadata in the first bytes of an entry file; None when ``head`` is too short to
    hold the header (``header_length(head)`` says how much is needed), {} when unreadable."""
    n = header_length(head)
    if len(head) < n:
        return None
    try:
        header = json.loads(head[8:n])
    except ValueError:
        return {}
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def header_length(head: bytes) -> int:
    """Bytes from the file's start to the end of its JSON header (0 when unreadable)."""
    n = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
    return 8 + n if 2 <= n <= _MAX_HEADER else 0


# safetensors' dtype codes -> (torch's name of the dtype, bytes per element): the checksum
# hashes torch's names, and a check from the raw bytes must hash the same ones.
_DTYPES = {
    "BOOL": ("torch.bool", 1),
    "U8": ("torch.uint8", 1),
    "I8": ("torch.int8", 1),
    "F8_E4M3": ("torch.float8_e4m3fn", 1),
    "F8_E5M2": ("torch.float8_e5m2", 1),
    "U16": ("torch.uint16", 2),
    "I16": ("torch.int16", 2),
    "F16": ("torch.float16", 2),
    "BF16": ("torch.bfloat16", 2),
    "U32": ("torch.uint32", 4),
    "I32": ("torch.int32", 4),
    "F32": ("torch.float32", 4),
    "U64": ("torch.uint64", 8),
    "I64": ("torch.int64", 8),
    "F64": ("torch.float64", 8),
    "C64": ("torch.complex64", 8),
}


def raw_checksum(header: Mapping[str, Any], body: memoryview) -> str:
    """``tensor_checksum`` of the tensors a safetensors header describes, from their bytes in
    ``body`` (the data section), without decoding them: the same BLAKE3, and no torch, so
    ``cache verify`` stays quick. Raises CorruptEntry on an inconsistent header."""
    layout: dict[str, list[Any]] = {}
    spans: dict[str, tuple[int, int]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, itemsize = _DTYPES[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            start, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptEntry(f"tensor {name!r}: bad header entry ({exc})") from None
        count = 1
        for d in shape:
            count *= d
        if min(shape, default=0) < 0 or not 0 <= start <= end <= len(body):
            raise CorruptEntry(f"tensor {name!r}: shape or offsets out of range")
        if end - start != count * itemsize:
            raise CorruptEntry(f"tensor {name!r}: {end - start} bytes for shape {shape}")
        layout[name] = [dtype, shape]
        spans[name] = (start, end)
    hasher = blake3.blake3()
    hasher.update(_layout_json(layout))
    for name in sorted(spans):
        start, end = spans[name]
        hasher.update(body[start:end])
    return hasher.hexdigest()


def _check(data: bytes) -> dict[str, str]:
    """The metadata of an entry file's bytes, after checking sizes, header and checksum from
    the raw bytes; raises CorruptEntry on any inconsistency."""
    if len(data) < 8:
        raise CorruptEntry(f"file too short ({len(data)} bytes)")
    n = int.from_bytes(data[:8], "little")
    if not 2 <= n <= min(_MAX_HEADER, len(data) - 8):
        raise CorruptEntry(f"bad header length {n} for a {len(data)}-byte file")
    try:
        header = json.loads(data[8 : 8 + n])
    except ValueError as exc:
        raise CorruptEntry(f"unreadable header: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
        raise CorruptEntry("header without mimicache metadata")
    meta = header["__metadata__"]
    ends = [
        v["data_offsets"][1]
        for k, v in header.items()
        if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v
    ]
    if max(ends, default=0) != len(data) - 8 - n:
        raise CorruptEntry(
            f"data section is {len(data) - 8 - n} bytes, header says {max(ends, default=0)}"
        )
    if meta.get("format") != "mimicache" or meta.get("schema") != str(SCHEMA):
        raise CorruptEntry("not a mimicache entry of this schema")
    if raw_checksum(header, memoryview(data)[8 + n :]) != meta.get("checksum"):
        raise CorruptEntry("checksum mismatch")
    return meta
