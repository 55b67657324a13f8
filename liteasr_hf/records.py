"""JSON files as dataclasses: the base of the reports liteasr-hf writes (``compression_report.json``, the evaluation
``*.summary.json``) and of their parts.

A record's fields are the file's keys, declared in the order the file holds them. ``to_dict`` / ``from_dict`` and
``to_json`` / ``from_json`` convert; nested records are read by the ``read`` function of their field. Two rules make
files of other versions safe to read and write again:

- a key this version does not know is kept in ``extra`` and written back where it was;
- a record read from a file writes back the keys it read, in their order, and the fields set since; a new record
  writes every field except the :func:`optional` ones that are unset (``None`` or empty): keys that only some runs
  write (healing, several processes) or that earlier versions did not write. A key missing from a file reads as its
  field's default; a missing key without a default is an error naming the record and the key.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

R = TypeVar("R", bound="JsonRecord")


def read_jsonl(path: str | os.PathLike, what: str) -> list[dict]:
    """The records of a JSON Lines file (blank lines skipped); ``ValueError`` naming ``what`` it was meant to hold."""
    try:
        return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError) as err:
        raise ValueError(f"Cannot read the {what} {path}: {err}") from err


def optional(*, default: Any = None, default_factory: Callable[[], Any] | None = None,
             read: Callable[[Any], Any] | None = None, written_with: str | None = None) -> Any:
    """A field that a new record writes only once it is set (not ``None``, not empty); ``written_with``: once that
    other field is set instead, even as ``null`` (a value that belongs to it). ``read`` builds the value from JSON."""
    metadata = {"optional": written_with or True, "read": read}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def reads(read: Callable[[Any], Any], **kwargs) -> Any:
    """A field that a new record always writes, whose value ``read`` builds from JSON (``kwargs``: a default)."""
    return dataclasses.field(metadata={"read": read}, **kwargs)


def each(read: Callable[[Any], Any]) -> Callable[[list], list]:
    """Read every item of a JSON list with ``read``."""
    return lambda items: [read(item) for item in items]


def by_name(read: Callable[[Any], Any]) -> Callable[[Mapping], dict]:
    """Read every value of a JSON object with ``read``."""
    return lambda entries: {name: read(entry) for name, entry in entries.items()}


def _unset(value: Any) -> bool:
    return value is None or (isinstance(value, (list, dict)) and not value)


def _plain(value: Any) -> Any:
    """``value`` as JSON holds it: records as dicts, tuples as lists; new containers all the way down."""
    if isinstance(value, JsonRecord):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclasses.dataclass(kw_only=True)
class JsonRecord:
    """Base of a JSON record: subclasses are ``@dataclass(kw_only=True)`` and declare the file's keys as fields."""

    #: Keys of the file this version does not know, kept to be written back.
    extra: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    #: The keys of the file this record was read from, in order (empty for a new record).
    _keys: tuple[str, ...] = dataclasses.field(default=(), init=False, repr=False, compare=False)
    #: ``json.dumps``'s ``ensure_ascii`` for :meth:`to_json`, as the file has always been written.
    json_ascii: ClassVar[bool] = True

    def to_dict(self) -> dict[str, Any]:
        """The record as the file holds it (see the module's rules on which keys are written)."""
        written: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if not f.init or f.name == "extra":
                continue
            value = getattr(self, f.name)
            rule = f.metadata.get("optional")
            if f.name not in self._keys:
                if rule and _unset(value if rule is True else getattr(self, rule)):
                    continue
                if self._keys and not rule and _unset(value):  # read without this key, and still unset
                    continue
            written[f.name] = _plain(value)
        extra = {k: _plain(v) for k, v in self.extra.items() if k not in written}
        order = [k for k in self._keys if k in written or k in extra]
        order += [k for k in [*written, *extra] if k not in order]
        return {k: written[k] if k in written else extra[k] for k in order}

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        """Read a record from ``data`` (parsed JSON). Raises ``ValueError`` naming the record when ``data`` is not
        an object or lacks a key that has no default."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}.")
        known = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name != "extra"}
        missing = [name for name, f in known.items() if name not in data and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ValueError(f"{cls.__name__} lacks {', '.join(repr(m) for m in missing)}.")
        values = {}
        for name, value in data.items():
            if name in known:
                read = known[name].metadata.get("read")
                values[name] = read(value) if read is not None and value is not None else value
        record = cls(**values, extra={k: v for k, v in data.items() if k not in known})
        record._keys = tuple(data)
        return record

    def to_json(self) -> str:
        """The record as its file's text: indented by 2, ending in a newline."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=self.json_ascii) + "\n"

    @classmethod
    def from_json(cls: type[R], text: str) -> R:
        """Read a record from the text of its file; ``ValueError`` when it is not JSON or not such a record."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def read(cls: type[R], path: str | os.PathLike) -> R:
        """Read the record in the file at ``path``; ``ValueError`` naming the file when it is not one."""
        path = Path(path)
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except ValueError as err:  # json.JSONDecodeError is one
            raise ValueError(f"Cannot read {path} as {cls.__name__}: {err}") from err
