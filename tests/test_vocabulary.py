"""The cancer-type vocabulary: the packaged files, the Spanish wording, and the loader's checks."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest

from intake.vocabulary import (
    DATA_FOLDER,
    GROUPS_FILE,
    OTHER_CODE,
    OTHER_GROUP,
    TYPES_FILE,
    CancerGroup,
    CancerType,
    Vocabulary,
    VocabularyError,
    load_vocabulary,
    vocabulary,
)

# Every code ever offered. They are stored in submissions.cancer_type: never remove or rename one.
STORED_CODES = frozenset(
    {
        "breast", "lung_nsclc", "lung_sclc", "lung_unknown", "colorectal", "anal", "stomach",
        "esophageal", "pancreatic", "pancreatic_net", "liver", "bile_duct", "gallbladder", "gist",
        "gi_net", "prostate", "bladder", "kidney", "testicular", "penile", "ovarian",
        "endometrial", "cervical", "vulvar_vaginal", "melanoma", "uveal_melanoma", "skin_scc",
        "skin_bcc", "merkel", "head_neck", "nasopharyngeal", "salivary", "thyroid",
        "glioblastoma", "glioma_other", "aml", "all", "cll", "cml", "mds", "mpn", "myeloma",
        "hodgkin", "dlbcl", "follicular", "mantle_cell", "nhl_other", "soft_tissue_sarcoma",
        "bone_sarcoma", "mesothelioma", "thymic", "neuroblastoma", "cup", "other_not_sure",
    }
)  # fmt: skip

# English words that must not survive in a Spanish label (matched as whole words, any case).
ENGLISH_LEFTOVERS = re.compile(
    r"\b(cancer|and|or|of|the|type|not|known|sure|other|cell|skin|lung|brain|blood|bone|"
    r"childhood|tumour|unknown|e\.g)\b",
    re.IGNORECASE,
)
# Spanish words as they are often mistyped without their accent.
MISSING_ACCENTS = re.compile(
    r"\b(cancer|pulmon|higado|celulas|prostata|pancreas|estomago|esofago|utero|rinon|testiculo|"
    r"timico|gastrico|linfatico|medula|oseo|linfoblastica|linfocitica|cronica|multiple|sindromes|"
    r"mielodisplasicos|tiroide|glandulas|organos|empezo)\b",
    re.IGNORECASE,
)
# Abbreviations a Spanish-speaking patient is likely to know; any other is spelled out.
KNOWN_SPANISH_ABBREVIATIONS = frozenset({"GIST", "LMA", "LLA", "LLC", "LMC", "SMD"})
UNSURE_NCIT = frozenset({"cervical", "glioma_other", "testicular"})


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return vocabulary()


# --- the packaged vocabulary --------------------------------------------------------------------


def test_packaged_vocabulary_loads_and_is_cached(vocab: Vocabulary) -> None:
    assert vocabulary() is vocab
    fresh = load_vocabulary()
    assert dict(fresh.types) == dict(vocab.types)
    assert fresh.groups == vocab.groups
    assert 8 <= len(vocab.groups) <= 12


def test_every_stored_code_is_present(vocab: Vocabulary) -> None:
    missing = STORED_CODES - set(vocab.types)
    assert not missing, f"codes are stored in the database and must never disappear: {missing}"
    assert OTHER_CODE in STORED_CODES


def test_every_group_has_types_and_other_comes_last(vocab: Vocabulary) -> None:
    grouped = vocab.grouped()
    assert [group for group, _ in grouped] == list(vocab.groups)
    assert all(types for _, types in grouped)
    last_group, last_types = grouped[-1]
    assert last_group.code == OTHER_GROUP
    assert [cancer_type.code for cancer_type in last_types] == [OTHER_CODE]


def test_grouped_lists_every_type_once_in_file_order(vocab: Vocabulary) -> None:
    flattened = [cancer_type for _, types in vocab.grouped() for cancer_type in types]
    assert [t.code for t in flattened] == list(vocab.types)  # the file is in display order
    for group, types in vocab.grouped():
        assert {cancer_type.group for cancer_type in types} == {group.code}


def test_grouped_puts_the_other_group_last_whatever_the_order() -> None:
    other = CancerGroup(OTHER_GROUP, "Other", "Otro")
    first = CancerGroup("first", "First", "Primero")
    empty = CancerGroup("empty", "Empty", "Vacío")

    def make(code: str, group: str) -> CancerType:
        return CancerType(code, group, code, code, None, "n/a", ())

    vocab = Vocabulary(
        types={OTHER_CODE: make(OTHER_CODE, OTHER_GROUP), "a": make("a", "first")},
        groups=(other, empty, first),
    )
    assert [(g.code, [t.code for t in ts]) for g, ts in vocab.grouped()] == [
        ("first", ["a"]),
        (OTHER_GROUP, [OTHER_CODE]),
    ]


def test_ncit_codes_and_statuses(vocab: Vocabulary) -> None:
    for cancer_type in vocab.types.values():
        if cancer_type.code == OTHER_CODE:
            assert cancer_type.ncit_code is None
            continue
        assert cancer_type.ncit_code is not None
        assert re.fullmatch(r"C\d+", cancer_type.ncit_code), cancer_type.code
        assert cancer_type.ncit_status in {"verified", "secondary", "unsure"}
    unsure = {t.code for t in vocab.types.values() if t.ncit_status == "unsure"}
    assert unsure == UNSURE_NCIT, "docs/vocabulary.md lists the unsure entries; update both"


def test_labels_lookup_and_languages(vocab: Vocabulary) -> None:
    assert vocab.label("breast", "en") == "Breast cancer"
    assert vocab.label("breast", "es") == "Cáncer de mama"
    assert vocab.label("breast", "es-MX") == "Cáncer de mama"
    assert vocab.label("breast", "fr") == "Breast cancer"
    assert vocab.groups[0].label("es") == "Mama"
    assert "breast" in vocab
    assert "no_such_code" not in vocab
    assert 42 not in vocab
    assert vocab.get("no_such_code") is None
    breast = vocab.get("breast")
    assert breast is not None and "Triple Negative Breast Cancer" in breast.synonyms
    with pytest.raises(KeyError):
        vocab.label("no_such_code", "en")


def test_vocabulary_is_immutable(vocab: Vocabulary) -> None:
    with pytest.raises(TypeError):
        vocab.types["new"] = vocab.types["breast"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        vocab.groups = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        vocab.types["breast"].label_es = "x"  # type: ignore[misc]
    assert isinstance(vocab.groups, tuple)
    assert isinstance(vocab.types["breast"].synonyms, tuple)


# --- the Spanish wording ------------------------------------------------------------------------


def _spanish_labels() -> list[tuple[str, str, str]]:
    vocab = vocabulary()
    labels = [(f"group:{g.code}", g.label_en, g.label_es) for g in vocab.groups]
    return labels + [(t.code, t.label_en, t.label_es) for t in vocab.types.values()]


@pytest.mark.parametrize(("code", "english", "spanish"), _spanish_labels(), ids=lambda v: v)
def test_spanish_label_is_translated(code: str, english: str, spanish: str) -> None:
    assert spanish != english, f"{code}: Spanish label is the English one"
    assert spanish[0].isupper(), f"{code}: {spanish!r} should start with a capital letter"
    leftover = ENGLISH_LEFTOVERS.search(spanish)
    assert leftover is None, (
        f"{code}: English word {leftover and leftover.group()!r} in {spanish!r}"
    )
    unaccented = MISSING_ACCENTS.search(spanish)
    assert unaccented is None, f"{code}: missing accent in {unaccented and unaccented.group()!r}"
    assert "/" not in spanish, f"{code}: write 'o' rather than a slash in {spanish!r}"
    assert "p. ej." not in spanish, f"{code}: write 'como' rather than 'p. ej.'"
    if spanish.startswith("Cáncer"):
        assert spanish.startswith("Cáncer de "), f"{code}: use the 'Cáncer de …' pattern"
    abbreviations = set(re.findall(r"\b[A-Z]{2,}[a-z]?\b", spanish))
    unknown = abbreviations - KNOWN_SPANISH_ABBREVIATIONS
    assert not unknown, f"{code}: abbreviations patients may not know: {sorted(unknown)}"


# --- the loader rejects bad files -------------------------------------------------------------


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A writable copy of the packaged vocabulary files."""
    for name in (TYPES_FILE, GROUPS_FILE):
        shutil.copyfile(DATA_FOLDER / name, tmp_path / name)
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} must occur exactly once in {path.name}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_an_unchanged_copy_loads(data: Path) -> None:
    assert dict(load_vocabulary(data).types) == dict(vocabulary().types)


BREAST = "breast,breast,Breast cancer,Cáncer de mama,C4872,verified,Breast Cancer|"
HEADER = "code,group,label_en,label_es,ncit_code,ncit_status,synonyms\n"

REJECTED = [
    # (id, file, old text, new text, line, expected message part)
    ("duplicate code", TYPES_FILE, "\nlung_nsclc,", "\nbreast,", 3, "duplicate type code 'breast'"),
    ("unknown group", TYPES_FILE, BREAST, BREAST.replace(",breast,", ",chest,"), 2,
     "unknown group 'chest'"),
    ("empty Spanish label", TYPES_FILE, BREAST, BREAST.replace("Cáncer de mama", ""), 2,
     "empty Spanish label"),
    ("empty English label", TYPES_FILE, BREAST, BREAST.replace("Breast cancer", ""), 2,
     "empty English label"),
    ("bad NCIt code", TYPES_FILE, BREAST, BREAST.replace("C4872", "NCIT:C4872"), 2,
     "NCIt code 'NCIT:C4872'"),
    ("NCIt code with a newline", TYPES_FILE, BREAST, BREAST.replace("C4872", '"C4872\n"'), 2,
     "line break"),
    ("empty NCIt code", TYPES_FILE, BREAST, BREAST.replace("C4872", ""), 2,
     "NCIt code is empty"),
    ("bad status", TYPES_FILE, BREAST, BREAST.replace("verified", "confirmed"), 2,
     "ncit_status 'confirmed'"),
    ("trailing whitespace in a label", TYPES_FILE, BREAST,
     BREAST.replace("Cáncer de mama", "Cáncer de mama "), 2, "trailing whitespace"),
    ("trailing whitespace at the end of a line", TYPES_FILE, "Male Breast Cancer\n",
     "Male Breast Cancer \n", 2, "trailing whitespace"),
    ("double space", TYPES_FILE, BREAST, BREAST.replace("de mama", "de  mama"), 2,
     "double space"),
    ("tab", TYPES_FILE, BREAST, BREAST.replace("de mama", "de\tmama"), 2, "tab"),
    ("padded synonym", TYPES_FILE, "Breast Cancer|Breast Carcinoma",
     "Breast Cancer| Breast Carcinoma", 2, "padded synonym"),
    ("decomposed accent", TYPES_FILE, BREAST, BREAST.replace("Cáncer", "Ca\u0301ncer"), 2,
     "NFC"),
    ("missing column", TYPES_FILE, HEADER, HEADER.replace("ncit_status,", ""), 1,
     "missing column 'ncit_status'"),
    ("unknown column", TYPES_FILE, HEADER, HEADER.replace("synonyms", "synonyms,notes"), 1,
     "unknown column 'notes'"),
    ("field count", TYPES_FILE, BREAST, BREAST.replace(",verified,", ",verified,extra,"), 2,
     "has 8 fields"),
    ("blank line", TYPES_FILE, "\nlung_nsclc,", "\n\nlung_nsclc,", 3, "blank line"),
    ("bad code", TYPES_FILE, "\nlung_nsclc,", "\nLung-NSCLC,", 3, "code 'Lung-NSCLC'"),
    ("other moved out of its group", TYPES_FILE, "other_not_sure,other,",
     "other_not_sure,breast,", 55, "only 'other_not_sure' belongs"),
    ("duplicate group", GROUPS_FILE, "\nlung_chest,", "\nbreast,", 3,
     "duplicate group code 'breast'"),
    ("empty Spanish group label", GROUPS_FILE, "Breast,Mama", "Breast,", 2,
     "empty Spanish label"),
    ("group without types", GROUPS_FILE, "\nbreast,Breast,Mama\n",
     "\nbreast,Breast,Mama\nunused,Unused,Sin uso\n", 3, "'unused' has no cancer types"),
    ("other group not last", GROUPS_FILE, "\nbreast,Breast,Mama\n",
     "\nother,Other or not sure,Otro o no lo sé\nbreast,Breast,Mama\n", 2,
     "must be the last row"),
    ("missing group column", GROUPS_FILE, "code,label_en,label_es\n", "code,label_en\n", 1,
     "missing column 'label_es'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("filename", "old", "new", "line", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in REJECTED],
)
def test_loader_rejects(
    data: Path, filename: str, old: str, new: str, line: int, expected: str
) -> None:
    _edit(data / filename, old, new)
    with pytest.raises(VocabularyError) as caught:
        load_vocabulary(data)
    message = str(caught.value)
    assert f"{data / filename}, line {line}: " in message, message
    assert expected in message, message
    assert any(
        problem.path == data / filename and problem.line == line and expected in problem.message
        for problem in caught.value.problems
    ), message


def test_loader_rejects_an_empty_ncit_status_for_other(data: Path) -> None:
    _edit(data / TYPES_FILE, "other_not_sure,other,Other cancer / not sure,Otro tipo de cáncer o no"
          " lo sé,,n/a,", "other_not_sure,other,Other cancer / not sure,Otro tipo de cáncer o no lo"
          " sé,,,")  # fmt: skip
    with pytest.raises(VocabularyError, match="ncit_status must be 'n/a'"):
        load_vocabulary(data)


def test_loader_rejects_a_missing_other_type(data: Path) -> None:
    path = data / TYPES_FILE
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text(
        "".join(line for line in lines if not line.startswith(OTHER_CODE + ",")), encoding="utf-8"
    )
    with pytest.raises(VocabularyError, match=f"the type '{OTHER_CODE}'.* is missing"):
        load_vocabulary(data)


def test_loader_rejects_files_that_are_not_utf8(data: Path) -> None:
    path = data / TYPES_FILE
    path.write_bytes(path.read_text(encoding="utf-8").encode("latin-1", errors="replace"))
    with pytest.raises(VocabularyError, match=r"cancer_types\.csv, line 2: is not valid UTF-8"):
        load_vocabulary(data)


def test_loader_rejects_a_byte_order_mark(data: Path) -> None:
    path = data / GROUPS_FILE
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    with pytest.raises(VocabularyError, match="byte-order mark"):
        load_vocabulary(data)


def test_loader_reports_a_missing_file(data: Path) -> None:
    (data / GROUPS_FILE).unlink()
    with pytest.raises(VocabularyError, match=r"cancer_groups\.csv: cannot be read"):
        load_vocabulary(data)


def test_loader_reports_every_problem_at_once(data: Path) -> None:
    _edit(data / TYPES_FILE, BREAST, BREAST.replace("C4872,verified", "X1,maybe"))
    _edit(data / GROUPS_FILE, "Breast,Mama", "Breast,")
    with pytest.raises(VocabularyError) as caught:
        load_vocabulary(data)
    assert len(caught.value.problems) == 3
    assert str(caught.value).startswith("3 problems in the cancer-type vocabulary:")
