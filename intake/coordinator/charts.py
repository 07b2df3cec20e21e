"""Charts: submissions per week by cancer type, and the status funnel.

Both are counted by SQL ``GROUP BY`` on plaintext columns only (received time, cancer-type code,
status): nothing sealed is read, so no key is needed and nothing is audited. Each chart is an
inline SVG built here, with no script: ``role="img"`` named by its ``<title>`` and ``<desc>``,
colours of at least 3:1 against white, a pattern per series and direct labels so colour is
never the only cue, and a visible data table under it with the exact numbers.

Weeks are ISO weeks in UTC (Monday 00:00 to Monday 00:00). Their boundaries are computed in
Python and bucketed with a portable ``CASE`` over ``received_at``, so SQLite and PostgreSQL
count the same way and the range filter uses the ``received_at`` index.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import render_template
from markupsafe import Markup, escape
from sqlalchemy import ColumnElement, case, func, literal, select
from sqlalchemy.orm import Session

from intake.coordinator import bp
from intake.coordinator.auth import login_required
from intake.database import read_only
from intake.extensions import db
from intake.models import Submission, utcnow
from intake.vocabulary import vocabulary

WEEKS = 12
TOP_TYPES = 6
OTHER_SERIES = "__other__"
OTHER_LABEL = "All other types"

WORKFLOW_STATUSES = (
    ("new", "New"),
    ("in_review", "In review"),
    ("contacted", "Contacted"),
    ("records_requested", "Records requested"),
    ("records_received", "Records received"),
    ("referred", "Referred"),
)
OUTCOME_STATUSES = (
    ("not_eligible", "Not eligible"),
    ("unreachable", "Unreachable"),
    ("withdrawn", "Withdrawn or expired"),
)

# Each has at least 4.5:1 contrast against white (tests/test_charts.py checks): bars stand out
# from the background, and white pattern lines on them stay visible.
PALETTE = ("#1d70b8", "#d4351c", "#00703c", "#4c2c92", "#8a5a00", "#a0005f")
OTHER_COLOUR = "#505a5f"
TEXT_COLOUR = "#0b0c0c"
AXIS_COLOUR = "#505a5f"
# One pattern per series, drawn in white over its colour: told apart without colour vision.
PATTERNS = (
    "",  # solid
    '<path d="M-2,2 l4,-4 M0,8 l8,-8 M6,10 l4,-4" stroke="#ffffff" stroke-width="1.5"/>',
    '<path d="M-2,6 l4,4 M0,0 l8,8 M6,-2 l4,4" stroke="#ffffff" stroke-width="1.5"/>',
    '<path d="M0,4 h8" stroke="#ffffff" stroke-width="1.5"/>',
    '<path d="M4,0 v8" stroke="#ffffff" stroke-width="1.5"/>',
    '<path d="M0,0 h8 M0,4 h8 M0,0 v8 M4,0 v8" stroke="#ffffff" stroke-width="1"/>',
    '<circle cx="4" cy="4" r="1.6" fill="#ffffff"/>',
)


# ---------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Series:
    key: str
    label: str
    colour: str
    pattern: int


@dataclass(frozen=True)
class Week:
    start: datetime
    counts: tuple[int, ...]  # one per series, in series order

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def iso_label(self) -> str:
        year, number, _ = self.start.isocalendar()
        return f"{year}-W{number:02d}"

    @property
    def short_label(self) -> str:
        return f"{self.start.day} {self.start:%b}"


@dataclass(frozen=True)
class WeeklyChart:
    series: tuple[Series, ...]
    weeks: tuple[Week, ...]

    @property
    def total(self) -> int:
        return sum(week.total for week in self.weeks)

    @property
    def own_series(self) -> int:
        """How many types have a series of their own (not counted in "All other types")."""
        return sum(item.key != OTHER_SERIES for item in self.series)

    def series_total(self, index: int) -> int:
        return sum(week.counts[index] for week in self.weeks)


@dataclass(frozen=True)
class StatusCount:
    code: str
    label: str
    count: int
    outcome: bool  # outside the workflow's main path (shown apart)


def week_starts(now: datetime, weeks: int = WEEKS) -> list[datetime]:
    """Mondays 00:00 UTC of the last ``weeks`` ISO weeks, oldest first, this week last."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    this_monday = today - timedelta(days=today.weekday())
    return [this_monday - timedelta(weeks=back) for back in range(weeks - 1, -1, -1)]


def weekly_counts(session: Session, starts: Sequence[datetime]) -> dict[tuple[int, str], int]:
    """``(week index, cancer-type code) -> count`` for submissions received in the weeks."""
    end = starts[-1] + timedelta(weeks=1)
    whens = [
        (Submission.received_at < boundary, index) for index, boundary in enumerate(starts[1:])
    ]
    bucket: ColumnElement[int] = case(*whens, else_=len(starts) - 1) if whens else literal(0)
    # Group in an outer query: PostgreSQL will not match a GROUP BY expression whose bound
    # parameters are rendered apart from the SELECT's, but grouping subquery columns is portable.
    inner = (
        select(bucket.label("week"), Submission.cancer_type.label("cancer_type"))
        .where(Submission.received_at >= starts[0], Submission.received_at < end)
        .subquery()
    )
    rows = session.execute(
        select(inner.c.week, inner.c.cancer_type, func.count()).group_by(
            inner.c.week, inner.c.cancer_type
        )
    )
    return {(int(week), str(code)): int(count) for week, code, count in rows}


def type_label(code: str) -> str:
    cancer_type = vocabulary().get(code)
    return cancer_type.label_en if cancer_type else code


def build_weekly(
    counts: dict[tuple[int, str], int], starts: Sequence[datetime], top: int = TOP_TYPES
) -> WeeklyChart:
    """The ``top`` types by total over the period as series, every other type in one more."""
    totals: dict[str, int] = {}
    for (_week, code), count in counts.items():
        totals[code] = totals.get(code, 0) + count
    ranked = sorted(totals, key=lambda code: (-totals[code], type_label(code), code))
    shown = ranked[:top]
    series = [Series(code, type_label(code), PALETTE[i], i) for i, code in enumerate(shown)]
    if len(ranked) > len(shown):
        series.append(Series(OTHER_SERIES, OTHER_LABEL, OTHER_COLOUR, len(PATTERNS) - 1))
    index = {item.key: position for position, item in enumerate(series)}
    weeks = []
    for week_number, start in enumerate(starts):
        row = [0] * len(series)
        for (week, code), count in counts.items():
            if week == week_number:
                row[index.get(code, len(series) - 1)] += count
        weeks.append(Week(start, tuple(row)))
    return WeeklyChart(tuple(series), tuple(weeks))


def status_counts(session: Session) -> list[StatusCount]:
    """Current counts per status: the workflow in order, then the other outcomes, then any
    status this module does not know (so a new one is counted, never dropped)."""
    query = select(Submission.status, func.count()).group_by(Submission.status)
    found = {str(status): int(count) for status, count in session.execute(query).all()}
    known = [(code, label, False) for code, label in WORKFLOW_STATUSES]
    known += [(code, label, True) for code, label in OUTCOME_STATUSES]
    known_codes = {code for code, _label, _outcome in known}
    extra = [(code, code, True) for code in sorted(found) if code not in known_codes]
    return [
        StatusCount(code, label, found.get(code, 0), outcome)
        for code, label, outcome in known + extra
    ]


# ---------------------------------------------------------------------------- SVG helpers


def nice_scale(maximum: int, ticks: int = 5) -> tuple[int, int]:
    """``(top, step)``: a round axis top at or above ``maximum``, in at most ``ticks`` steps."""
    if maximum <= 0:
        return 1, 1
    magnitude = 1
    while True:
        for factor in (1, 2, 5):
            step = factor * magnitude
            if step * ticks >= maximum:
                return -(-maximum // step) * step, step
        magnitude *= 10


def _text(x: float, y: float, content: str, **attributes: str) -> str:
    """A ``<text>``; keyword attributes (``text_anchor`` is ``text-anchor``) add or override."""
    merged = {"fill": TEXT_COLOUR, "font-size": "13"}
    merged.update({name.replace("_", "-"): value for name, value in attributes.items()})
    extra = "".join(f' {name}="{escape(value)}"' for name, value in merged.items())
    return f'<text x="{x:.1f}" y="{y:.1f}"{extra}>{escape(content)}</text>'


def _pattern_defs(prefix: str, series: Iterable[Series]) -> str:
    parts = []
    for item in series:
        lines = PATTERNS[item.pattern]
        parts.append(
            f'<pattern id="{prefix}-p{item.pattern}" width="8" height="8" '
            f'patternUnits="userSpaceOnUse"><rect width="8" height="8" fill="{item.colour}"/>'
            f"{lines}</pattern>"
        )
    return f"<defs>{''.join(parts)}</defs>"


def _svg_open(ids: str, width: int, height: int) -> str:
    title, desc = f"{ids}-title", f"{ids}-desc"
    return (
        f'<svg role="img" aria-labelledby="{title} {desc}" viewBox="0 0 {width} {height}" '
        f'width="100%" class="staff-chart" xmlns="http://www.w3.org/2000/svg" '
        f'font-family="Arial, Helvetica, sans-serif">'
    )


def _title_desc(ids: str, title: str, desc: str) -> str:
    return (
        f'<title id="{ids}-title">{escape(title)}</title>'
        f'<desc id="{ids}-desc">{escape(desc)}</desc>'
    )


# ---------------------------------------------------------------------------- weekly chart

PLOT_LEFT, PLOT_TOP, PLOT_WIDTH, PLOT_HEIGHT = 56, 24, 640, 240
LEGEND_COLUMNS, LEGEND_ROW = 2, 24


def weekly_description(chart: WeeklyChart) -> str:
    if chart.total == 0:
        return f"No submissions in the last {len(chart.weeks)} weeks."
    busiest = max(chart.weeks, key=lambda week: week.total)
    leader = max(range(len(chart.series)), key=chart.series_total)
    return (
        f"{chart.total} submissions in the last {len(chart.weeks)} weeks, "
        f"from {chart.weeks[0].iso_label} to {chart.weeks[-1].iso_label}. "
        f"The busiest week was {busiest.iso_label} with {busiest.total}. "
        f"Most common type: {chart.series[leader].label} ({chart.series_total(leader)}). "
        "Exact numbers are in the table below the chart."
    )


def weekly_svg(chart: WeeklyChart, ids: str = "weekly") -> Markup:
    legend_rows = -(-len(chart.series) // LEGEND_COLUMNS)
    height = PLOT_TOP + PLOT_HEIGHT + 40 + legend_rows * LEGEND_ROW + 8
    top, step = nice_scale(max((week.total for week in chart.weeks), default=0))
    parts = [
        _svg_open(ids, PLOT_LEFT + PLOT_WIDTH + 16, height),
        _title_desc(ids, "Submissions per week, by cancer type", weekly_description(chart)),
        _pattern_defs(ids, chart.series),
        *_y_axis(top, step),
        *_weekly_bars(chart, ids, top),
        *_legend(chart.series, ids, PLOT_TOP + PLOT_HEIGHT + 44),
        "</svg>",
    ]
    svg = "".join(parts)
    # Every text in it went through escape(); numbers and ids are formatted by the code.
    return Markup(svg)  # noqa: S704  # nosec B704


def _y(value: float, top: int) -> float:
    return PLOT_TOP + PLOT_HEIGHT - PLOT_HEIGHT * value / top


def _y_axis(top: int, step: int) -> list[str]:
    parts = []
    for value in range(0, top + 1, step):
        y = _y(value, top)
        parts.append(
            f'<line x1="{PLOT_LEFT}" x2="{PLOT_LEFT + PLOT_WIDTH}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{AXIS_COLOUR}" stroke-width="{1 if value == 0 else 0.5}"/>'
        )
        parts.append(_text(PLOT_LEFT - 8, y + 4, str(value), text_anchor="end"))
    return parts


def _weekly_bars(chart: WeeklyChart, ids: str, top: int) -> list[str]:
    slot = PLOT_WIDTH / max(len(chart.weeks), 1)
    width = slot * 0.64
    parts = []
    for number, week in enumerate(chart.weeks):
        x = PLOT_LEFT + slot * number + (slot - width) / 2
        below = 0
        for index, count in enumerate(week.counts):
            if not count:
                continue
            y_top, y_bottom = _y(below + count, top), _y(below, top)
            pattern = chart.series[index].pattern
            parts.append(
                f'<rect x="{x:.1f}" y="{y_top:.1f}" width="{width:.1f}" '
                f'height="{y_bottom - y_top:.1f}" fill="url(#{ids}-p{pattern})" '
                f'stroke="{TEXT_COLOUR}" stroke-width="1"/>'
            )
            below += count
        centre = x + width / 2
        parts.append(_text(centre, _y(week.total, top) - 5, str(week.total), text_anchor="middle"))
        baseline = PLOT_TOP + PLOT_HEIGHT + 18
        parts.append(
            _text(centre, baseline, week.short_label, text_anchor="middle", font_size="12")
        )
    return parts


def _legend(series: Sequence[Series], ids: str, y0: float) -> list[str]:
    column_width = (PLOT_LEFT + PLOT_WIDTH) / LEGEND_COLUMNS
    parts = []
    for index, item in enumerate(series):
        row, column = divmod(index, LEGEND_COLUMNS)
        x, y = 8 + column * column_width, y0 + row * LEGEND_ROW
        parts.append(
            f'<rect x="{x:.1f}" y="{y - 12:.1f}" width="16" height="16" '
            f'fill="url(#{ids}-p{item.pattern})" stroke="{TEXT_COLOUR}" stroke-width="1"/>'
        )
        parts.append(_text(x + 22, y + 1, _shorten(item.label, 44)))
    return parts


def _shorten(label: str, length: int) -> str:
    return label if len(label) <= length else label[: length - 1].rstrip() + "…"


# ---------------------------------------------------------------------------- status funnel

FUNNEL_LABEL_WIDTH, FUNNEL_BAR_WIDTH, FUNNEL_ROW, FUNNEL_GAP = 200, 400, 30, 34
FUNNEL_COLOURS = (("#1d70b8", 0), ("#505a5f", 1))  # (colour, pattern) for workflow, outcomes


def funnel_description(counts: Sequence[StatusCount]) -> str:
    total = sum(item.count for item in counts)
    if total == 0:
        return "No submissions yet."
    workflow = ", ".join(f"{item.label} {item.count}" for item in counts if not item.outcome)
    outcomes = ", ".join(f"{item.label} {item.count}" for item in counts if item.outcome)
    return (
        f"{total} submissions by their current status. Workflow, in order: {workflow}. "
        f"Other outcomes: {outcomes}. Exact numbers are in the table below the chart."
    )


def funnel_svg(counts: Sequence[StatusCount], ids: str = "funnel") -> Markup:
    outcomes_start = next((i for i, item in enumerate(counts) if item.outcome), len(counts))
    height = FUNNEL_GAP + len(counts) * FUNNEL_ROW + FUNNEL_GAP + 8
    biggest = max((item.count for item in counts), default=0) or 1
    series = [Series("workflow", "", *FUNNEL_COLOURS[0]), Series("outcome", "", *FUNNEL_COLOURS[1])]
    parts = [
        _svg_open(ids, FUNNEL_LABEL_WIDTH + FUNNEL_BAR_WIDTH + 80, height),
        _title_desc(ids, "Submissions by current status", funnel_description(counts)),
        _pattern_defs(ids, series),
        _text(8, 20, "Workflow, in order", font_weight="bold"),
    ]
    y = float(FUNNEL_GAP)
    for index, item in enumerate(counts):
        if index == outcomes_start:
            parts.append(_text(8, y + 16, "Other outcomes", font_weight="bold"))
            y += FUNNEL_GAP - 8
        parts.extend(_funnel_row(item, ids, y, biggest, series[item.outcome].pattern))
        y += FUNNEL_ROW
    parts.append("</svg>")
    svg = "".join(parts)
    # Every text in it went through escape(); numbers and ids are formatted by the code.
    return Markup(svg)  # noqa: S704  # nosec B704


def _funnel_row(item: StatusCount, ids: str, y: float, biggest: int, pattern: int) -> list[str]:
    width = FUNNEL_BAR_WIDTH * item.count / biggest
    x = FUNNEL_LABEL_WIDTH
    parts = [_text(x - 8, y + 17, item.label, text_anchor="end")]
    if item.count:
        parts.append(
            f'<rect x="{x}" y="{y + 4:.1f}" width="{width:.1f}" height="{FUNNEL_ROW - 8}" '
            f'fill="url(#{ids}-p{pattern})" stroke="{TEXT_COLOUR}" stroke-width="1"/>'
        )
    parts.append(_text(x + width + 6, y + 17, str(item.count)))
    return parts


# ---------------------------------------------------------------------------- the page


@bp.get("/charts")
@login_required("admin", "coordinator", "auditor")
def charts() -> str:
    read_only(db.session())
    starts = week_starts(utcnow())
    weekly = build_weekly(weekly_counts(db.session(), starts), starts)
    statuses = status_counts(db.session())
    db.session.commit()  # end the read before rendering
    return render_template(
        "coordinator/charts.html",
        weekly=weekly,
        weekly_svg=weekly_svg(weekly),
        statuses=statuses,
        status_total=sum(item.count for item in statuses),
        funnel_svg=funnel_svg(statuses),
    )
