"""The usage dashboard in Django admin: totals, breakdowns and a per-day chart over the ledger.

Every figure is a database aggregate over ApiCall in a fixed number of queries: one grouped by
(day, model, error code) that is rolled up here into the totals, the model and day tables and the
errors; one grouped by user; the budget alerts. Costs are summed as recorded; Decimal throughout,
rounded only in the template. The web searches' part of the cost is each row's count times the
per-1,000 price in its own snapshot, summed in the same queries. The charts' geometry is
computed in chat/ledger/chart.py.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from urllib.parse import urlencode

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import (
    Count,
    DecimalField,
    ExpressionWrapper,
    F,
    Q,
    QuerySet,
    Sum,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, TruncDate
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from chat.ledger import entries, usage
from chat.ledger.chart import COST_SERIES, TOKEN_SERIES, chart
from chat.models import ApiCall, Feedback

PERIOD_DAYS = {"today": 1, "7d": 7, "30d": 30}
DEFAULT_PERIOD = "30d"
MAX_CUSTOM_DAYS = 366
MAX_USER_ROWS = 100
MAX_ALERT_ROWS = 50
# Sortable columns of every table: Totals attribute → heading; each table adds its key column.
COLUMNS = {
    "requests": "Requests",
    "input": "Input",
    "cache_write": "Cache write",
    "cache_read": "Cache read",
    "output": "Output",
    "searches": "Web searches",
    "search_cost": "Search cost (USD)",
    "cost": "Cost (USD)",
    "errors": "Errors",
}
TABLES = {
    # table → (GET parameter, key column label, default sort)
    "users": ("users_sort", "User", "-cost"),
    "models": ("models_sort", "Model", "-cost"),
    "days": ("days_sort", "Day", "-day"),
}
KEY_COLUMN = {"users": "user", "models": "model", "days": "day"}


class PeriodForm(forms.Form):
    period = forms.ChoiceField(
        choices=[
            ("today", "Today"),
            ("7d", "Last 7 days"),
            ("30d", "Last 30 days"),
            ("custom", "From – to"),
        ],
        required=False,
    )
    start = forms.DateField(
        label="From", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    end = forms.DateField(
        label="To", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )

    def clean(self) -> dict:
        data = super().clean()
        if data.get("period") == "custom":
            start, end = data.get("start"), data.get("end")
            if not start or not end:
                raise forms.ValidationError("Choose both dates for a custom period.")
            if end < start:
                raise forms.ValidationError("The end date is before the start date.")
            if (end - start).days >= MAX_CUSTOM_DAYS:
                raise forms.ValidationError(f"Choose at most {MAX_CUSTOM_DAYS} days.")
        return data


@dataclass(frozen=True)
class Period:
    first_day: date
    last_day: date  # inclusive

    @property
    def days(self) -> list[date]:
        return [
            self.first_day + timedelta(days=i)
            for i in range((self.last_day - self.first_day).days + 1)
        ]

    @property
    def start(self) -> datetime:
        return _midnight(self.first_day)

    @property
    def end(self) -> datetime:
        """Exclusive: the midnight after the last day."""
        return _midnight(self.last_day + timedelta(days=1))


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=timezone.get_default_timezone())


def period_from(form: PeriodForm, now: datetime | None = None) -> Period:
    """Whole days in settings.TIME_ZONE; an invalid form gives the default period."""
    today = usage.period_starts(now)[0].date()
    data = form.cleaned_data if form.is_valid() else {}
    choice = data.get("period") or DEFAULT_PERIOD
    if choice == "custom":
        return Period(data["start"], data["end"])
    return Period(today - timedelta(days=PERIOD_DAYS[choice] - 1), today)


@dataclass
class Totals:
    requests: int = 0
    input: int = 0
    cache_write: int = 0
    cache_read: int = 0
    output: int = 0
    searches: int = 0
    search_cost: Decimal = field(default_factory=Decimal)  # part of `cost`
    cost: Decimal = field(default_factory=Decimal)
    errors: int = 0
    truncations: int = 0
    refusals: int = 0

    @classmethod
    def from_row(cls, row: dict) -> Totals:
        return cls(
            requests=row["requests"],
            input=row["input"] or 0,
            cache_write=row["cache_write"] or 0,
            cache_read=row["cache_read"] or 0,
            output=row["output"] or 0,
            searches=row["searches"] or 0,
            search_cost=row["search_cost"] or Decimal(0),
            cost=row["spent"] or Decimal(0),
            errors=row["errors"],
            truncations=row["truncations"],
            refusals=row["refusals"],
        )

    def add(self, other: Totals) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def hit_ratio(self) -> Decimal | None:
        """Cache reads over all input tokens (uncached, written to cache, read from cache)."""
        prompt = self.input + self.cache_write + self.cache_read
        return Decimal(self.cache_read) / prompt if prompt else None

    @property
    def hit_percent(self) -> str:
        ratio = self.hit_ratio
        return "—" if ratio is None else f"{ratio * 100:.1f} %"


MONEY = DecimalField(max_digits=14, decimal_places=8)
# A call's searches at the per-1,000 price of its own snapshot (the price when it was recorded);
# NULL, so left out of the sum, for a snapshot without that price (no search was priced then).
SEARCH_COST = ExpressionWrapper(
    F("web_search_requests") * Cast(KT("prices__web_search_per_1k"), MONEY) / 1000,
    output_field=MONEY,
)


REPLIES = Q(purpose__in=entries.REPLY_PURPOSES)


def _sums() -> dict:
    """The aggregates every table shows; names avoid the model's field names."""
    return {
        "requests": Count("id"),
        "input": Sum("input_tokens"),
        "cache_write": Sum("cache_write_5m_tokens") + Sum("cache_write_1h_tokens"),
        "cache_read": Sum("cache_read_tokens"),
        "output": Sum("output_tokens"),
        "searches": Sum("web_search_requests"),
        "search_cost": Sum(SEARCH_COST),
        "spent": Sum("cost"),
        "errors": Count("id", filter=~Q(error_code="")),
        # Of replies only: a title or a summary cut at its few tokens is no reply cut short.
        "truncations": Count("id", filter=Q(stop_reason="max_tokens") & REPLIES),
        "refusals": Count("id", filter=Q(stop_reason="refusal") & REPLIES),
    }


@dataclass
class Row:
    key: object
    label: str
    totals: Totals
    calls_url: str
    conversations_url: str = ""


@dataclass
class Rollup:
    totals: Totals
    by_model: dict[str, Totals]
    by_day: dict[date, Totals]
    errors: list[tuple[str, int]]


def rollup(calls: QuerySet[ApiCall]) -> Rollup:
    """Totals, per model, per day and errors by kind from one grouped query."""
    rows = (
        calls.order_by()
        .annotate(day=TruncDate("created_at", tzinfo=timezone.get_default_timezone()))
        .values("day", "model", "error_code")
        .annotate(**_sums())
    )
    result = Rollup(Totals(), defaultdict(Totals), defaultdict(Totals), [])
    errors: dict[str, int] = defaultdict(int)
    for row in rows:
        part = Totals.from_row(row)
        result.totals.add(part)
        result.by_model[row["model"]].add(part)
        result.by_day[row["day"]].add(part)
        if row["error_code"]:
            errors[row["error_code"]] += part.requests
    result.errors = sorted(errors.items(), key=lambda item: (-item[1], item[0]))
    return result


def _sort_param(request: HttpRequest, table: str) -> tuple[str, bool]:
    """(column, descending) from the table's GET parameter, whitelisted."""
    param, _, default = TABLES[table]
    raw = request.GET.get(param, "")
    column = raw.removeprefix("-")
    if column not in COLUMNS and column != KEY_COLUMN[table]:
        raw, column = default, default.removeprefix("-")
    return column, raw.startswith("-")


def _sorted(rows: list[Row], column: str, descending: bool) -> list[Row]:
    if column in COLUMNS:
        return sorted(rows, key=lambda r: (getattr(r.totals, column), r.label), reverse=descending)
    return sorted(rows, key=lambda r: r.key, reverse=descending)


def by_user(
    calls: QuerySet[ApiCall], column: str, descending: bool, in_period: dict[str, str]
) -> tuple[list[Row], bool]:
    """The first MAX_USER_ROWS users in the chosen order, and whether there were more.

    Grouping by user id alone lets PostgreSQL aggregate in parallel before any join, three
    times faster over a million rows; the page's names come in a second query. Sorting by name
    needs the join first.
    """
    by_name = column == "user"
    group = ("user_id", "user__username") if by_name else ("user_id",)
    order = {"user": "user__username", "cost": "spent"}.get(column, column)
    rows = list(
        calls.order_by()
        .values(*group)
        .annotate(**_sums())
        .order_by(F(order).desc() if descending else F(order).asc(), "user_id")[: MAX_USER_ROWS + 1]
    )
    if by_name:
        names = {row["user_id"]: row["user__username"] for row in rows}
    else:
        ids = [row["user_id"] for row in rows if row["user_id"] is not None]
        names = dict(get_user_model().objects.filter(pk__in=ids).values_list("pk", "username"))
    result = []
    for row in rows[:MAX_USER_ROWS]:
        user_id = row["user_id"]
        result.append(
            Row(
                key=user_id,
                label=names.get(user_id) or "(deleted user)",
                totals=Totals.from_row(row),
                calls_url=_calls_url(
                    **({"user__id__exact": user_id} if user_id else {"user__isnull": "True"}),
                    **in_period,
                ),
                conversations_url=_changelist_url("conversation", owner__id__exact=user_id)
                if user_id
                else "",
            )
        )
    return result, len(rows) > MAX_USER_ROWS


def _changelist_url(model: str, **filters) -> str:
    return reverse(f"admin:chat_{model}_changelist") + "?" + urlencode(filters)


def _calls_url(**filters) -> str:
    return _changelist_url("apicall", **filters)


def _headers(request: HttpRequest, table: str, column: str, descending: bool) -> list[dict]:
    param, key_label, _ = TABLES[table]
    headers = []
    for key, label in [(KEY_COLUMN[table], key_label), *COLUMNS.items()]:
        query = request.GET.copy()
        # A second click on the sorted column reverses it; numbers start with the largest.
        if key == column:
            query[param] = key if descending else f"-{key}"
        else:
            query[param] = f"-{key}" if key in COLUMNS else key
        arrow = ("▼" if descending else "▲") if key == column else ""
        headers.append({"label": label, "url": "?" + query.urlencode(), "arrow": arrow})
    return headers


def budget_alerts(now: datetime | None = None) -> tuple[list[dict], int]:
    """The MAX_ALERT_ROWS users nearest or furthest over a limit, and how many there are."""
    everyone = usage.users_near_limit(usage.WARN_PERCENT, now)
    flagged = everyone[:MAX_ALERT_ROWS]
    if not flagged:
        return [], 0
    names = dict(
        get_user_model()
        .objects.filter(pk__in=[uid for uid, _ in flagged])
        .values_list("pk", "username")
    )
    alerts = [
        {
            "username": names.get(user_id, f"#{user_id}"),
            "percent": percent,
            "over": percent >= usage.OVER_PERCENT,
            "user_url": reverse("admin:auth_user_change", args=[user_id]),
            "calls_url": _calls_url(user__id__exact=user_id),
        }
        for user_id, percent in flagged
    ]
    return alerts, len(everyone)


def feedback_counts(*, since: datetime, until: datetime) -> dict[str, int]:
    """Ratings of replies given (or last changed) in [since, until): {"up": n, "down": n}."""
    rows = Feedback.objects.filter(updated_at__gte=since, updated_at__lt=until)
    found = dict(rows.order_by().values_list("rating").annotate(n=Count("id")))
    return {rating: found.get(rating, 0) for rating in Feedback.Rating.values}


# --- The view ---------------------------------------------------------------------------------


def dashboard_view(request: HttpRequest) -> HttpResponse:
    """Staff with chat.view_apicall (or superusers) only; admin_view sends others to login."""
    if not request.user.has_perm("chat.view_apicall"):
        raise PermissionDenied
    # The menu shows the period on screen: the default one when the query names none.
    data = request.GET.copy()
    if not data.get("period"):
        data["period"] = DEFAULT_PERIOD
    form = PeriodForm(data)
    period = period_from(form)
    calls = ApiCall.objects.filter(created_at__gte=period.start, created_at__lt=period.end)
    summary = rollup(calls)
    in_period = _range_filters(period.start, period.end)
    sorts = {name: _sort_param(request, name) for name in TABLES}
    user_rows, more_users = by_user(calls, *sorts["users"], in_period)
    alerts, flagged_count = budget_alerts()
    per_day = [summary.by_day.get(day, Totals()) for day in period.days]
    rows = {
        "users": user_rows,
        "models": _sorted(
            [
                Row(model, model, t, _calls_url(model__exact=model, **in_period))
                for model, t in summary.by_model.items()
            ],
            *sorts["models"],
        ),
        "days": _sorted(
            [
                Row(day, day.isoformat(), t, _calls_url(**_day_filters(day)))
                for day, t in summary.by_day.items()
            ],
            *sorts["days"],
        ),
    }
    context = {
        **admin.site.each_context(request),
        "title": "Usage",
        "form": form,
        "period": period,
        "totals": summary.totals,
        "errors_by_kind": summary.errors,
        "tables": {
            name: {"rows": rows[name], "headers": _headers(request, name, *sorts[name])}
            for name in TABLES
        },
        "more_users": more_users,
        "max_user_rows": MAX_USER_ROWS,
        "cost_chart": chart("Cost per day (USD)", period.days, per_day, COST_SERIES, money=True),
        "token_chart": chart("Tokens per day", period.days, per_day, TOKEN_SERIES, money=False),
        "alerts": alerts,
        "flagged_count": flagged_count,
        # Ratings given (or changed) in the period, linked to them in the admin.
        "feedback": feedback_counts(since=period.start, until=period.end),
        "feedback_url": _changelist_url(
            "feedback",
            updated_at__gte=period.start.isoformat(),
            updated_at__lt=period.end.isoformat(),
        ),
        "warn_percent": usage.WARN_PERCENT,
        "calls_url": _calls_url(**in_period),
        "export_url": reverse("admin:chat_apicall_export") + "?" + urlencode(in_period),
    }
    return TemplateResponse(request, "admin/chat/usage_dashboard.html", context)


def _range_filters(start: datetime, end: datetime) -> dict[str, str]:
    """Changelist query parameters for calls in [start, end)."""
    return {"created_at__gte": start.isoformat(), "created_at__lt": end.isoformat()}


def _day_filters(day: date) -> dict[str, str]:
    return _range_filters(_midnight(day), _midnight(day + timedelta(days=1)))
