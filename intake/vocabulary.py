"""The cancer-type vocabulary: the codes the patient form offers and the database stores.

Two UTF-8 CSV files in ``intake/data/`` hold it (``docs/vocabulary.md`` describes them):

- ``cancer_groups.csv``: ``code,label_en,label_es``, one row per group, in display order;
- ``cancer_types.csv``: ``code,group,label_en,label_es,ncit_code,ncit_status,synonyms``, one row
  per cancer type, in display order within its group.

:func:`load_vocabulary` validates both files completely and raises one :class:`VocabularyError`
listing every problem with its file and line, so a bad edit fails at start-up or in the tests,
never in front of a patient. :func:`vocabulary` is the cached load of the packaged files.

Type codes are stored in ``submissions.cancer_type``: never rename or remove one.
"""

from __future__ import annotations

import csv
import functools
import io
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

DATA_FOLDER = Path(__file__).resolve().parent / "data"
TYPES_FILE = "cancer_types.csv"
GROUPS_FILE = "cancer_groups.csv"

OTHER_CODE = "other_not_sure"
"""The "Other cancer / not sure" type: the only one without an NCIt code, always shown last."""
OTHER_GROUP = "other"
"""The group holding only :data:`OTHER_CODE`; it must be the last group."""

NCIT_STATUSES = frozenset({"verified", "secondary", "unsure"})
NO_NCIT_STATUS = "n/a"
"""The ``ncit_status`` of a type without an NCIt code (only :data:`OTHER_CODE`)."""
SYNONYM_SEPARATOR = "|"
MAX_CODE_LENGTH = 40  # submissions.cancer_type is String(40)

TYPE_COLUMNS = ("code", "group", "label_en", "label_es", "ncit_code", "ncit_status", "synonyms")
GROUP_COLUMNS = ("code", "label_en", "label_es")

_CODE_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
_NCIT_PATTERN = re.compile(r"C[0-9]+")


def _is_spanish(language: str) -> bool:
    """``es``, ``es-MX``, ``es_US`` and so on are Spanish; anything else is English."""
    return language.replace("_", "-").split("-", 1)[0].lower() == "es"


@dataclass(frozen=True)
class CancerGroup:
    """A patient-friendly group of cancer types (an ``<optgroup>`` of the form's select)."""

    code: str
    label_en: str
    label_es: str

    def label(self, language: str) -> str:
        """The label in ``language``: Spanish for ``es``, English for anything else."""
        return self.label_es if _is_spanish(language) else self.label_en


@dataclass(frozen=True)
class CancerType:
    """One selectable cancer type. ``code`` is what the database stores."""

    code: str
    group: str
    label_en: str
    label_es: str
    ncit_code: str | None
    ncit_status: str
    synonyms: tuple[str, ...]

    def label(self, language: str) -> str:
        """The label in ``language``: Spanish for ``es``, English for anything else."""
        return self.label_es if _is_spanish(language) else self.label_en


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a vocabulary file; ``line`` is None for a file-wide problem."""

    path: Path
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}" if self.line is None else f"{self.path}, line {self.line}"
        return f"{where}: {self.message}"


class VocabularyError(Exception):
    """The vocabulary files are invalid. The message lists every problem with file and line."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        heading = f"{count} problem{'s' if count != 1 else ''} in the cancer-type vocabulary:"
        super().__init__("\n".join([heading, *(f"  {problem}" for problem in self.problems)]))


@dataclass(frozen=True, eq=False, repr=False)
class Vocabulary:
    """An immutable, validated vocabulary: types by code (display order) and groups in order."""

    types: Mapping[str, CancerType]
    groups: tuple[CancerGroup, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "types", MappingProxyType(dict(self.types)))
        object.__setattr__(self, "groups", tuple(self.groups))

    def __repr__(self) -> str:
        return f"<Vocabulary {len(self.types)} types in {len(self.groups)} groups>"

    def __contains__(self, code: object) -> bool:
        return isinstance(code, str) and code in self.types

    def get(self, code: str) -> CancerType | None:
        """The type with this code, or None."""
        return self.types.get(code)

    def label(self, code: str, language: str) -> str:
        """The label of a type in ``language``. Raises KeyError for an unknown code."""
        cancer_type = self.types.get(code)
        if cancer_type is None:
            raise KeyError(code)
        return cancer_type.label(language)

    def grouped(self) -> list[tuple[CancerGroup, list[CancerType]]]:
        """Groups in display order with their types in file order; the "other" group last.

        Groups without types are left out, so the form never shows an empty ``<optgroup>``.
        """
        members: dict[str, list[CancerType]] = {group.code: [] for group in self.groups}
        for cancer_type in self.types.values():
            members.setdefault(cancer_type.group, []).append(cancer_type)
        ordered = sorted(self.groups, key=lambda group: group.code == OTHER_GROUP)  # stable
        return [(group, members[group.code]) for group in ordered if members[group.code]]


# --- loading and validation -------------------------------------------------------------------


class _Collector:
    """Problems found so far, all reported together."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, path: Path, line: int | None, message: str) -> None:
        self.problems.append(Problem(path, line, message))


def _read_rows(
    path: Path, columns: tuple[str, ...], problems: _Collector
) -> list[tuple[int, dict[str, str]]] | None:
    """The data rows of a CSV file with their line numbers, or None if the file is unusable.

    Checks encoding, header, field counts and whitespace; the callers check the meaning.
    """
    try:
        raw = path.read_bytes()
    except OSError as error:
        problems.add(path, None, f"cannot be read ({error.strerror or error})")
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        problems.add(path, line, "is not valid UTF-8; save the file as UTF-8")
        return None
    if text.startswith("\ufeff"):
        problems.add(path, 1, "starts with a byte-order mark; save as UTF-8 without BOM")
        return None

    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, dict[str, str]]] = []
    header: list[str] | None = None
    previous_end = 0
    try:
        for fields in reader:
            line, previous_end = previous_end + 1, reader.line_num  # where the record starts
            if header is None:
                header = fields
                if not _header_ok(path, line, header, columns, problems):
                    return None
                continue
            if not fields or fields == [""]:
                problems.add(path, line, "blank line")
                continue
            if len(fields) != len(header):
                problems.add(path, line, f"has {len(fields)} fields, the header has {len(header)}")
                continue
            row = dict(zip(header, fields, strict=True))
            for column in columns:
                _check_text(path, line, column, row[column], problems)
            rows.append((line, row))
    except csv.Error as error:
        problems.add(path, reader.line_num, f"is not valid CSV ({error})")
        return None
    if header is None:
        problems.add(path, None, "is empty; it needs the header " + ",".join(columns))
        return None
    return rows


def _header_ok(
    path: Path, line: int, header: list[str], columns: tuple[str, ...], problems: _Collector
) -> bool:
    missing = [column for column in columns if column not in header]
    unknown = [column for column in header if column not in columns]
    repeated = sorted({column for column in header if header.count(column) > 1})
    for column in missing:
        problems.add(path, line, f"missing column {column!r}")
    for column in unknown:
        problems.add(path, line, f"unknown column {column!r}")
    for column in repeated:
        problems.add(path, line, f"column {column!r} appears more than once")
    return not (missing or unknown or repeated)


def _check_text(path: Path, line: int, column: str, value: str, problems: _Collector) -> None:
    """No stray whitespace, control characters or decomposed accents in any value."""
    if value != value.strip():
        problems.add(path, line, f"{column}: leading or trailing whitespace in {value!r}")
    if re.search(r"[^\S ]|  ", value):
        problems.add(path, line, f"{column}: tab, line break or double space in {value!r}")
    if any(unicodedata.category(char) == "Cc" for char in value):
        problems.add(path, line, f"{column}: control character in {value!r}")
    if not unicodedata.is_normalized("NFC", value):
        problems.add(path, line, f"{column}: not in Unicode NFC form (decomposed accents)")


def _check_code(path: Path, line: int, code: str, problems: _Collector) -> bool:
    if not _CODE_PATTERN.fullmatch(code) or len(code) > MAX_CODE_LENGTH:
        problems.add(
            path,
            line,
            f"code {code!r} must be lowercase letters, digits and underscores, starting with a"
            f" letter, at most {MAX_CODE_LENGTH} characters",
        )
        return False
    return True


def _check_labels(path: Path, line: int, row: Mapping[str, str], problems: _Collector) -> None:
    for column, language in (("label_en", "English"), ("label_es", "Spanish")):
        if not row[column]:
            problems.add(path, line, f"{row['code']!r}: empty {language} label ({column})")


def _load_groups(path: Path, problems: _Collector) -> dict[str, tuple[int, CancerGroup]]:
    rows = _read_rows(path, GROUP_COLUMNS, problems)
    groups: dict[str, tuple[int, CancerGroup]] = {}
    if rows is None:
        return groups
    for line, row in rows:
        code = row["code"]
        if not _check_code(path, line, code, problems):
            continue
        if code in groups:
            problems.add(
                path, line, f"duplicate group code {code!r} (first on line {groups[code][0]})"
            )
            continue
        _check_labels(path, line, row, problems)
        groups[code] = (line, CancerGroup(code, row["label_en"], row["label_es"]))
    if not rows:
        problems.add(path, None, "has no groups")
    elif OTHER_GROUP not in groups:
        problems.add(path, None, f"the group {OTHER_GROUP!r} is missing")
    elif list(groups)[-1] != OTHER_GROUP:
        problems.add(
            path, groups[OTHER_GROUP][0], f"the group {OTHER_GROUP!r} must be the last row"
        )
    return groups


def _load_types(
    path: Path, group_codes: Mapping[str, object], problems: _Collector
) -> dict[str, tuple[int, CancerType]]:
    rows = _read_rows(path, TYPE_COLUMNS, problems)
    types: dict[str, tuple[int, CancerType]] = {}
    if rows is None:
        return types
    for line, row in rows:
        code = row["code"]
        if not _check_code(path, line, code, problems):
            continue
        if code in types:
            problems.add(
                path, line, f"duplicate type code {code!r} (first on line {types[code][0]})"
            )
            continue
        _check_labels(path, line, row, problems)
        group = row["group"]
        if group not in group_codes:
            problems.add(path, line, f"{code!r}: unknown group {group!r}")
        if (group == OTHER_GROUP) != (code == OTHER_CODE):
            problems.add(
                path, line, f"{code!r}: only {OTHER_CODE!r} belongs to the group {OTHER_GROUP!r}"
            )
        ncit_code, status = row["ncit_code"], row["ncit_status"]
        if ncit_code:
            if not _NCIT_PATTERN.fullmatch(ncit_code):
                problems.add(path, line, f"{code!r}: NCIt code {ncit_code!r} is not like C1234")
            if status not in NCIT_STATUSES:
                allowed = ", ".join(sorted(NCIT_STATUSES))
                problems.add(
                    path, line, f"{code!r}: ncit_status {status!r} is not one of {allowed}"
                )
        elif code != OTHER_CODE:
            problems.add(path, line, f"{code!r}: NCIt code is empty (only {OTHER_CODE!r} may be)")
        elif status != NO_NCIT_STATUS:
            problems.add(
                path, line, f"{code!r}: ncit_status must be {NO_NCIT_STATUS!r} without an NCIt code"
            )
        synonyms = tuple(row["synonyms"].split(SYNONYM_SEPARATOR)) if row["synonyms"] else ()
        for synonym in synonyms:
            if not synonym or synonym != synonym.strip():
                problems.add(path, line, f"{code!r}: empty or padded synonym {synonym!r}")
        seen: set[str] = set()
        for synonym in synonyms:
            if synonym in seen:
                problems.add(path, line, f"{code!r}: synonym {synonym!r} listed twice")
            seen.add(synonym)
        types[code] = (
            line,
            CancerType(
                code=code,
                group=group,
                label_en=row["label_en"],
                label_es=row["label_es"],
                ncit_code=ncit_code or None,
                ncit_status=status,
                synonyms=synonyms,
            ),
        )
    if rows and OTHER_CODE not in types:
        problems.add(path, None, f"the type {OTHER_CODE!r} (Other cancer / not sure) is missing")
    return types


def load_vocabulary(folder: Path | None = None) -> Vocabulary:
    """Load and validate the vocabulary in ``folder`` (default: the packaged ``intake/data``).

    Raises :class:`VocabularyError` naming every problem with its file and line.
    """
    folder = DATA_FOLDER if folder is None else folder
    groups_path, types_path = folder / GROUPS_FILE, folder / TYPES_FILE
    problems = _Collector()
    groups = _load_groups(groups_path, problems)
    types = _load_types(types_path, groups, problems)
    used = {cancer_type.group for _, cancer_type in types.values()}
    if types:
        for code, (line, _) in groups.items():
            if code not in used:
                problems.add(groups_path, line, f"the group {code!r} has no cancer types")
    if problems.problems:
        raise VocabularyError(problems.problems)
    return Vocabulary(
        types={code: cancer_type for code, (_, cancer_type) in types.items()},
        groups=tuple(group for _, group in groups.values()),
    )


@functools.cache
def vocabulary() -> Vocabulary:
    """The packaged vocabulary, loaded and validated once per process."""
    return load_vocabulary()
