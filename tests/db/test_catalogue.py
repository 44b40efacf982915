"""The case browser query, a reader's next case and idempotent study/series creation."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from db import catalogue
from db.catalogue import count_cases, get_or_create_series, get_or_create_study, list_cases
from db.migrate import upgrade
from db.models import (
    Assignment,
    Dispute,
    LevelGrade,
    ModelVersion,
    Prediction,
    Report,
    Series,
    Study,
    User,
)
from db.session import make_engine, make_sessionmaker, unit_of_work
from spine_core.errors import InputError
from tests.db_fixtures import BACKEND_PARAMS, fresh_database

N = 12
T0 = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)
READER1_ORDER = [0, 1, 2, 4, 3, 5]  # reader1 was given study 4 before study 3
READER1_STATUS = {0: "submitted", 1: "submitted", 2: "submitted", 3: "assigned", 4: "assigned",
                  5: "in_progress"}


def uid(i: int) -> str:
    return f"1.2.826.0.1.{i}"


@dataclass
class Catalogue:
    sessions: sessionmaker[Session]
    engine: Any
    reader_ids: dict[str, int]


def _populate(session: Session) -> dict[str, int]:
    """12 studies whose attributes follow simple rules of their index i (see each line)."""
    readers = {name: User(username=name, role="annotator") for name in ("r1", "r2", "r3")}
    session.add_all(readers.values())
    descriptions = {5: "Trauma 100% CT_neck", 6: "trauma 100 CTxneck"}
    studies = [
        Study(
            study_uid=uid(i),
            dataset="verse" if i % 3 == 0 else "rsna",
            status="new" if i < 4 else "in_reading" if i < 8 else "final",
            n_slices=100 + (7 * i) % N,  # all different, not in index order
            has_mask=i % 2 == 0,
            region=("cervical", "thoracolumbar", "whole", "")[i % 4],
            patient_id=f"PAT{i:03d}",
            description=descriptions.get(i, ""),
            imported_at=T0 + dt.timedelta(minutes=i),
        )
        for i in range(N)
    ]
    session.add_all(studies)
    session.flush()
    for order, i in enumerate(READER1_ORDER):
        session.add(Assignment(study_id=studies[i].id, reader_id=readers["r1"].id,
                               status=READER1_STATUS[i], assigned_at=T0 + dt.timedelta(hours=order)))
    for i in range(3, 9):
        session.add(Assignment(study_id=studies[i].id, reader_id=readers["r2"].id,
                               status="submitted", assigned_at=T0))
    session.add(Report(study_id=studies[0].id, labels={"T1": True, "C1": False, "C2": True}))
    session.add(Report(study_id=studies[1].id, labels={"C1": False}))
    for level, state in (("C1", "open"), ("C2", "open"), ("C3", "decided")):
        session.add(Dispute(study_id=studies[2].id, level=level, kind="readers_disagree",
                            status=state))
    session.add(Dispute(study_id=studies[7].id, level="C5", kind="readers_disagree",
                        status="decided"))
    model = ModelVersion(name="demo", version="1")
    session.add(model)
    session.flush()
    for i in (1, 9):
        session.add(Prediction(study_id=studies[i].id, model_version_id=model.id))
    for i, grade in ((2, 2), (6, 1), (10, 3)):  # Genant grades of r3 (or the dataset)
        session.add(LevelGrade(study_id=studies[i].id, reader_id=readers["r3"].id, level="L1",
                               grade=grade, morphology="wedge"))
    return {name: user.id for name, user in readers.items()}


@pytest.fixture(scope="module", params=BACKEND_PARAMS)
def cat(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Catalogue]:
    """One populated database per backend, shared by the read-only tests of this module."""
    with fresh_database(request.param, tmp_path_factory.mktemp("catalogue")) as url:
        upgrade(url)
        engine = make_engine(url)
        try:
            sessions = make_sessionmaker(engine)
            with unit_of_work(sessions) as session:
                reader_ids = _populate(session)
            yield Catalogue(sessions, engine, reader_ids)
        finally:
            engine.dispose()


def indices(cat: Catalogue, **kwargs: Any) -> list[int]:
    """The study indices (i) of one page, in page order."""
    with unit_of_work(cat.sessions, readonly=True) as session:
        page = list_cases(session, **kwargs)
    return [int(r.study_uid.rsplit(".", 1)[1]) for r in page.rows]


def test_default_page_is_newest_first(cat: Catalogue) -> None:
    with unit_of_work(cat.sessions, readonly=True) as session:
        page = list_cases(session)
    assert page.total == N and page.n_pages == 1
    assert [r.study_uid for r in page.rows] == [uid(i) for i in reversed(range(N))]
    assert page.rows[0].imported_at == T0 + dt.timedelta(minutes=N - 1)


def test_pages_partition_the_result(cat: Catalogue) -> None:
    pages = []
    for p in range(3):
        with unit_of_work(cat.sessions, readonly=True) as session:
            page = list_cases(session, page=p, page_size=5)
        assert (page.total, page.n_pages) == (N, 3)
        pages.append([r.study_uid for r in page.rows])
    assert [len(p) for p in pages] == [5, 5, 2]
    assert sum(pages, []) == [uid(i) for i in reversed(range(N))]
    with unit_of_work(cat.sessions, readonly=True) as session:
        beyond = list_cases(session, page=7, page_size=5)
    assert (beyond.rows, beyond.total) == ([], N)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"dataset": "verse"}, [0, 3, 6, 9]),
        ({"status": "final"}, [8, 9, 10, 11]),
        ({"has_mask": True}, [0, 2, 4, 6, 8, 10]),
        ({"has_mask": False}, [1, 3, 5, 7, 9, 11]),
        ({"has_disputes": True}, [2]),  # study 7's dispute is decided, not open
        ({"has_disputes": False}, [0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
        ({"has_predictions": True}, [1, 9]),
        ({"dataset": "rsna", "has_mask": True}, [2, 4, 8, 10]),
        ({"dataset": "nope"}, []),
        ({"search": "pat00"}, list(range(10))),
        ({"search": uid(11)}, [11]),
        ({"search": "TRAUMA"}, [5, 6]),
        ({"search": "100%"}, [5]),  # % is a literal, not a wildcard
        ({"search": "ct_neck"}, [5]),  # so is _
        ({"search": "   "}, list(range(N))),
        ({"region": "whole"}, [2, 6, 10]),
        ({"region": "cervical", "has_mask": True}, [0, 4, 8]),
        ({"min_grade": 2}, [2, 10]),
        ({"min_grade": 2, "region": "whole"}, [2, 10]),
        ({"min_grade": 1}, [2, 6, 10]),
    ],
)
def test_filters_and_search(cat: Catalogue, filters: dict[str, Any], expected: list[int]) -> None:
    assert sorted(indices(cat, **filters)) == expected
    with unit_of_work(cat.sessions, readonly=True) as session:
        assert list_cases(session, **filters).total == len(expected)
        assert count_cases(session, **filters) == len(expected)


def test_reader_filter(cat: Catalogue) -> None:
    assert sorted(indices(cat, reader_id=cat.reader_ids["r1"])) == [0, 1, 2, 3, 4, 5]
    assert indices(cat, reader_id=cat.reader_ids["r3"]) == []


def test_sorting(cat: Catalogue) -> None:
    by_slices = indices(cat, sort="n_slices", descending=False)
    assert by_slices == sorted(range(N), key=lambda i: (7 * i) % N)
    assert indices(cat, sort="study_uid", descending=False) == sorted(range(N), key=uid)
    assert indices(cat, sort="open_disputes")[0] == 2
    assert indices(cat, sort="imported_at", descending=False) == list(range(N))


def test_row_summaries(cat: Catalogue) -> None:
    with unit_of_work(cat.sessions, readonly=True) as session:
        rows = {r.study_uid: r for r in list_cases(session).rows}
    two, zero, one, three = rows[uid(2)], rows[uid(0)], rows[uid(1)], rows[uid(3)]
    assert (two.open_disputes, two.has_prediction, two.has_mask) == (2, False, True)
    assert dict(two.readers) == {"r1": "submitted"}
    assert dict(three.readers) == {"r1": "assigned", "r2": "submitted"}
    assert dict(rows[uid(11)].readers) == {}
    assert zero.report_fractured == ("C2", "T1")
    assert zero.report_summary == "fracture: C2, T1"
    assert one.report_summary == "no fracture" and one.has_prediction
    assert two.report_summary == "no report" and two.report_fractured is None
    assert (zero.dataset, zero.status, zero.n_slices, zero.patient_id) == ("verse", "new", 100,
                                                                          "PAT000")


def test_one_sql_statement_per_page(cat: Catalogue) -> None:
    statements: list[str] = []

    def remember(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.startswith("BEGIN"):
            statements.append(statement)

    event.listen(cat.engine, "before_cursor_execute", remember)
    try:
        with unit_of_work(cat.sessions, readonly=True) as session:
            page = list_cases(session, has_mask=True, search="pat", sort="open_disputes")
    finally:
        event.remove(cat.engine, "before_cursor_execute", remember)
    assert len(page.rows) == 6
    assert len(statements) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sort": "colour"}, "cannot sort"),
        ({"status": "done"}, "unknown study status"),
        ({"page": -1}, "page must be"),
        ({"page_size": 0}, "page size"),
        ({"page_size": 5000}, "page size"),
    ],
)
def test_bad_arguments_are_explained(cat: Catalogue, kwargs: dict[str, Any], message: str
                                     ) -> None:
    with unit_of_work(cat.sessions, readonly=True) as session:
        with pytest.raises(InputError, match=message):
            list_cases(session, **kwargs)


def test_next_case_follows_assignment_order(cat: Catalogue) -> None:
    with unit_of_work(cat.sessions, readonly=True) as session:
        nxt = catalogue.next_case_for(session, cat.reader_ids["r1"])
        assert nxt is not None and nxt.study_uid == uid(4)
        assert catalogue.next_case_for(session, cat.reader_ids["r2"]) is None  # all submitted
        assert catalogue.next_case_for(session, cat.reader_ids["r3"]) is None  # nothing assigned


# --- idempotent creation (fresh database per test) -----------------------------------------------
def _series_fields() -> dict[str, Any]:
    return {"source_format": "dicom", "source_dir": "d", "shape": [3, 4, 5],
            "affine": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "fingerprint": "f"}


def test_get_or_create_is_idempotent(db_sessions: sessionmaker[Session]) -> None:
    for attempt in range(2):
        with unit_of_work(db_sessions) as session:
            study, created = get_or_create_study(session, " 1.2.3 ", "rsna", n_slices=3,
                                                 has_mask=True)
            assert created == (attempt == 0)
            series, s_created = get_or_create_series(session, "1.2.3.1", study, **_series_fields())
            assert s_created == (attempt == 0)
            assert (study.study_uid, study.n_slices, series.study_id) == ("1.2.3", 3, study.id)
    with unit_of_work(db_sessions, readonly=True) as session:
        assert session.scalar(select(func.count(Study.id))) == 1
        assert session.scalar(select(func.count(Series.id))) == 1


def test_existing_study_is_returned_unchanged(db_sessions: sessionmaker[Session]) -> None:
    with unit_of_work(db_sessions) as session:
        get_or_create_study(session, "1.2.3", "rsna", description="first")
    with unit_of_work(db_sessions) as session:
        study, created = get_or_create_study(session, "1.2.3", "rsna", description="second")
    assert not created and study.description == "first"


def test_get_or_create_refuses_bad_input(db_sessions: sessionmaker[Session]) -> None:
    with unit_of_work(db_sessions) as session:
        for bad in ("  ", "../../../../PWNED", "1.2." + "3" * 70):
            with pytest.raises(InputError, match="is not a DICOM UID"):
                get_or_create_study(session, bad, "rsna")
        with pytest.raises(InputError, match="no field"):
            get_or_create_study(session, "1.2.3", "rsna", colour="red")
        one, _ = get_or_create_study(session, "1.2.3", "rsna")
        other, _ = get_or_create_study(session, "1.2.4", "rsna")
        get_or_create_series(session, "1.2.3.1", one, **_series_fields())
        with pytest.raises(InputError, match="already belongs to another study"):
            get_or_create_series(session, "1.2.3.1", other, **_series_fields())


def test_losing_a_creation_race_returns_the_winners_row(db_sessions: sessionmaker[Session]
                                                        ) -> None:
    """If another writer inserted the UID after our lookup missed, the insert's savepoint fails
    and the other writer's row comes back (the outer transaction survives)."""
    with unit_of_work(db_sessions) as session:
        winner, _ = get_or_create_study(session, "9.9", "rsna", description="winner")
    with unit_of_work(db_sessions) as session:
        session.add(Study(study_uid="9.8", dataset="rsna"))  # earlier work of this transaction
        # what get_or_create_study does after a lookup that (in the race) found nothing:
        row, created = catalogue._insert_or_fetch(
            session, Study(study_uid="9.9", dataset="rsna", description="loser"),
            select(Study).where(Study.study_uid == "9.9"))
        assert (created, row.id, row.description) == (False, winner.id, "winner")
    with unit_of_work(db_sessions, readonly=True) as session:
        assert sorted(session.scalars(select(Study.study_uid))) == ["9.8", "9.9"]
