"""Charts: weekly submissions by cancer type and the status funnel, as accessible inline SVG."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from intake.coordinator import charts
from intake.extensions import db
from intake.keys import current_keyring
from intake.models import Submission
from intake.sealing import Keyring
from intake.vocabulary import vocabulary
from tests.factories import login, make_submission, make_user

NOW = datetime.now(UTC)
STARTS = charts.week_starts(NOW)
TYPES = [code for code in vocabulary().types if code != "other_not_sure"]


def seed(app: Flask, rows: list[tuple[str, datetime, str]]) -> None:
    """Submissions through the real service, then their plaintext columns moved in time."""
    with app.app_context():
        for number, (cancer_type, received_at, status) in enumerate(rows):
            submission = make_submission(db.session(), current_keyring(), f"C{number}")
            db.session.execute(
                update(Submission)
                .where(Submission.id == submission.id)
                .values(received_at=received_at, status=status, cancer_type=cancer_type)
            )
        db.session.commit()


def signed_in(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    login(client, make_user(app, role=role))
    return client


def page(client: FlaskClient) -> str:
    response = client.get("/coordinator/charts")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def table(html: str, table_id: str) -> dict[str, list[str]]:
    """Row header -> cells of the table with ``table_id``."""
    body = html.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", body, re.S):
        header = re.search(r'<th scope="row">(.*?)</th>', row, re.S)
        if header:
            rows[header.group(1).strip()] = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    return rows


# ---------------------------------------------------------------------------- pure parts


def test_weeks_are_iso_weeks_starting_monday_utc() -> None:
    starts = charts.week_starts(datetime(2026, 3, 5, 15, 30, tzinfo=UTC))  # a Thursday
    assert len(starts) == 12
    assert starts[-1] == datetime(2026, 3, 2, tzinfo=UTC)
    assert all(start.weekday() == 0 and start.hour == 0 for start in starts)
    assert all(b - a == timedelta(weeks=1) for a, b in itertools.pairwise(starts))
    assert charts.Week(starts[-1], ()).iso_label == "2026-W10"


@pytest.mark.parametrize(
    ("maximum", "expected"),
    [(0, (1, 1)), (3, (3, 1)), (7, (8, 2)), (42, (50, 10)), (99, (100, 20))],
)
def test_axis_scale_is_round(maximum: int, expected: tuple[int, int]) -> None:
    assert charts.nice_scale(maximum) == expected


def _contrast(colour: str) -> float:
    def linear(channel: float) -> float:
        return channel / 12.92 if channel <= 0.03928 else ((channel + 0.055) / 1.055) ** 2.4

    red, green, blue = (linear(int(colour[i : i + 2], 16) / 255) for i in (1, 3, 5))
    luminance = 0.2126 * red + 0.7152 * green + 0.0722 * blue
    return 1.05 / (luminance + 0.05)


def test_colours_contrast_with_white_and_patterns_differ() -> None:
    for colour in (*charts.PALETTE, charts.OTHER_COLOUR, charts.TEXT_COLOUR, charts.AXIS_COLOUR):
        assert _contrast(colour) >= 4.5, colour
    assert len(set(charts.PATTERNS)) == len(charts.PATTERNS) > charts.TOP_TYPES


def test_top_types_get_a_series_and_the_rest_are_combined() -> None:
    counts = {(11, code): 10 - rank for rank, code in enumerate(TYPES[:9])}
    chart = charts.build_weekly(counts, STARTS)
    assert [item.key for item in chart.series] == [*TYPES[:6], charts.OTHER_SERIES]
    assert chart.series[0].label == vocabulary().label(TYPES[0], "en")
    assert chart.series[-1].label == "All other types"
    assert chart.weeks[-1].counts[-1] == 4 + 3 + 2  # the 7th, 8th and 9th types
    assert chart.total == sum(counts.values())
    assert len({(item.colour, item.pattern) for item in chart.series}) == len(chart.series)


def test_few_types_need_no_other_series() -> None:
    chart = charts.build_weekly({(0, TYPES[0]): 2, (3, TYPES[1]): 1}, STARTS)
    assert [item.key for item in chart.series] == TYPES[:2]
    assert [week.total for week in chart.weeks] == [2, 0, 0, 1] + [0] * 8


# ---------------------------------------------------------------------------- the page


def test_counts_in_the_tables_match_the_database(app: Flask) -> None:
    this_week, last_week = STARTS[-1], STARTS[-2]
    seed(
        app,
        [
            (TYPES[0], this_week + timedelta(hours=1), "new"),
            (TYPES[0], this_week, "in_review"),  # Monday 00:00 belongs to its own week
            (TYPES[1], this_week - timedelta(microseconds=1), "referred"),  # Sunday: last week
            (TYPES[1], last_week + timedelta(days=3), "not_eligible"),
            (TYPES[2], STARTS[0], "withdrawn"),  # the first day of the oldest week shown
            (TYPES[2], STARTS[0] - timedelta(seconds=1), "new"),  # just before: not shown
        ],
    )
    html = page(signed_in(app, "coordinator"))
    weekly = table(html, "weekly-table")
    current = f"{this_week.isocalendar()[0]}-W{this_week.isocalendar()[1]:02d}"
    assert weekly[f"{current} ({this_week:%Y-%m-%d})"][-1] == "2"
    previous = f"{last_week.isocalendar()[0]}-W{last_week.isocalendar()[1]:02d}"
    assert weekly[f"{previous} ({last_week:%Y-%m-%d})"][-1] == "2"
    assert weekly["All 12 weeks"][-1] == "5"
    with app.app_context():
        in_window = db.session.scalars(
            select(Submission.received_at).where(Submission.received_at >= STARTS[0])
        ).all()
        statuses = Counter(db.session.scalars(select(Submission.status)))
    assert int(weekly["All 12 weeks"][-1]) == len(in_window)
    funnel = table(html, "funnel-table")
    assert funnel["New"][0] == str(statuses["new"]) == "2"
    assert funnel["Referred"][0] == "1" and funnel["Contacted"][0] == "0"
    assert funnel["Withdrawn or expired (outcome)"][0] == "1"
    assert funnel["All statuses"][0] == str(sum(statuses.values())) == "6"
    order = [label.split(" (")[0] for label in funnel][:9]
    labels = [label for _code, label in charts.WORKFLOW_STATUSES + charts.OUTCOME_STATUSES]
    assert order == labels


def test_each_chart_is_a_named_described_svg_with_a_visible_table(app: Flask) -> None:
    seed(app, [(TYPES[0], STARTS[-1] + timedelta(hours=2), "new")])
    html = page(signed_in(app, "auditor"))
    for ids in ("weekly", "funnel"):
        svg = re.search(
            rf'<svg role="img" aria-labelledby="{ids}-title {ids}-desc".*?</svg>', html, re.S
        )
        assert svg, ids
        assert f'<title id="{ids}-title">' in svg[0] and f'<desc id="{ids}-desc">' in svg[0]
        assert "style=" not in svg[0] and "<script" not in svg[0]
    assert "1 submissions in the last 12 weeks" in html
    assert html.count("<caption>") == 2 and 'scope="col"' in html and 'scope="row"' in html
    assert "<script" not in html.split("<main", 1)[1]


def test_labels_are_escaped_in_the_svg_and_the_table(app: Flask) -> None:
    hostile_type, hostile_status = '<script>alert("x")</script>&', '<b>"s"</b>&'
    seed(app, [(hostile_type, STARTS[-1] + timedelta(hours=1), hostile_status)])
    html = page(signed_in(app, "admin"))
    assert "<script>alert" not in html and "<b>" not in html
    assert html.count("&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;") >= 3  # svg, table
    assert html.count("&lt;b&gt;&#34;s&#34;&lt;/b&gt;&amp;") >= 3  # svg text, desc, table


def test_charts_never_open_sealed_data(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(app, [(TYPES[0], NOW, "new")])
    client = signed_in(app, "coordinator")

    def refuse(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("the charts opened a sealed record")

    monkeypatch.setattr(Keyring, "open", refuse)
    assert "All 12 weeks" in page(client)


def test_an_empty_database_draws_empty_charts(app: Flask) -> None:
    html = page(signed_in(app, "coordinator"))
    assert "No submissions in the last 12 weeks." in html and "No submissions yet." in html
    assert table(html, "funnel-table")["All statuses"] == ["0", "–"]


@pytest.mark.parametrize("role", ["admin", "coordinator", "auditor"])
def test_every_staff_role_sees_the_charts(app: Flask, role: str) -> None:
    client = signed_in(app, role)
    response = client.get("/coordinator/charts")
    assert response.status_code == 200
    assert '<a href="/coordinator/charts">Charts</a>' in response.get_data(as_text=True)  # nav


def test_anonymous_visitors_are_sent_to_sign_in(client: FlaskClient) -> None:
    response = client.get("/coordinator/charts")
    assert response.status_code == 303
    assert response.headers["Location"] == "/coordinator/login?next=/coordinator/charts"
