"""A user's effective policy: what they may use, from the policies of their groups.

`policy_for(user)` (one query) and `policies_for(user_ids)` (one query for many users) are the
one place a policy is computed; every path that starts a reply, sets a conversation's model,
effort or web search, or takes an upload asks them (docs/admin.md, "Group policies").

A user in several groups with a policy gets the most generous of each field: the union of the
models (an empty list allows every model), the highest effort (blank: any), web search and
documents if any group allows them, the largest upload limits and money budgets (blank: the
server's own). A user in no group with a policy gets `UNRESTRICTED`: what the server allows,
as before policies existed. Superusers follow the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db.models import F

from chat.errors import UserFacingError
from chat.models import GroupPolicy

# In rising order, as in docs/protocol.md.
EFFORT_ORDER = ("low", "medium", "high", "xhigh", "max")


class Forbidden(UserFacingError):
    """The user's policy does not allow what was asked."""

    code = "forbidden"


class Unset:
    """A budget no group sets: the server default applies (repr for messages and tests)."""

    def __repr__(self) -> str:
        return "SERVER_DEFAULT"


SERVER_DEFAULT = Unset()


@dataclass(frozen=True)
class Policy:
    """What one user may use. None means no restriction of that kind (the server's limit)."""

    models: frozenset[str] | None = None
    max_effort: str | None = None
    web_search: bool = True
    documents: bool = True
    max_files_per_message: int | None = None
    max_file_bytes: int | None = None
    # Money budgets from groups: SERVER_DEFAULT (no group sets one), None (no limit) or dollars.
    daily_cost: Decimal | None | Unset = SERVER_DEFAULT
    monthly_cost: Decimal | None | Unset = SERVER_DEFAULT
    from_groups: bool = False

    # --- reading it ---------------------------------------------------------------------------

    def allows_model(self, model_id: str) -> bool:
        return self.models is None or model_id in self.models

    def allows_effort(self, effort: str) -> bool:
        if self.max_effort is None or not effort:
            return True
        return EFFORT_ORDER.index(effort) <= EFFORT_ORDER.index(self.max_effort)

    def allowed_efforts(self, levels: Iterable[str]) -> list[str]:
        return [level for level in levels if self.allows_effort(level)]

    @property
    def allows_web_search(self) -> bool:
        """Web search where the server and the policy both allow it."""
        return self.web_search and settings.CLAUDE_WEB_SEARCH

    def files_per_message(self) -> int:
        """The most files one message may carry: the policy's, within IMAGE_MAX_PER_MESSAGE."""
        server = settings.IMAGE_MAX_PER_MESSAGE
        return (
            server
            if self.max_files_per_message is None
            else min(server, self.max_files_per_message)
        )

    def file_bytes(self, server_limit: int) -> int:
        """The largest file of a kind whose server limit is `server_limit`."""
        return (
            server_limit if self.max_file_bytes is None else min(server_limit, self.max_file_bytes)
        )

    # --- refusing -----------------------------------------------------------------------------

    def check_model(self, model_id: str, label: str = "") -> None:
        if not self.allows_model(model_id):
            raise Forbidden(f"You may not use {label or model_id}; pick another model.")

    def check_effort(self, effort: str | None) -> None:
        if effort and not self.allows_effort(effort):
            raise Forbidden(
                f"The thinking effort {effort} is not allowed for you; the highest you may "
                f"use is {self.max_effort}."
            )

    def check_web_search(self) -> None:
        if not self.web_search:
            raise Forbidden("Web search is not allowed for you.")

    def check_documents(self) -> None:
        if not self.documents:
            raise Forbidden("Documents (PDF and text files) are not allowed for you.")

    def check_file_count(self, count: int) -> None:
        limit = self.files_per_message()
        if count > limit and limit < settings.IMAGE_MAX_PER_MESSAGE:
            raise Forbidden(f"You may send at most {limit} files with one message.")


UNRESTRICTED = Policy()


def policy_for(user) -> Policy:
    """The user's effective policy (one query)."""
    if user is None or not getattr(user, "pk", None):
        return UNRESTRICTED
    return policies_for([user.pk])[user.pk]


def policy_for_user_id(user_id: int) -> Policy:
    return policies_for([user_id])[user_id]


def policies_for(user_ids: Iterable[int]) -> dict[int, Policy]:
    """Every user's effective policy, in one query; users in no group with a policy get
    UNRESTRICTED."""
    ids = set(user_ids)
    rows: dict[int, list[GroupPolicy]] = {uid: [] for uid in ids}
    if ids:
        found = GroupPolicy.objects.annotate(member_id=F("group__user__id")).filter(
            member_id__in=ids
        )
        for policy in found:
            rows[policy.member_id].append(policy)
    return {uid: merge(group_policies) for uid, group_policies in rows.items()}


def merge(group_policies: list[GroupPolicy]) -> Policy:
    """The most generous of each field of these groups' policies."""
    if not group_policies:
        return UNRESTRICTED
    models: set[str] | None = set()
    for p in group_policies:
        if not p.allowed_models:
            models = None
            break
        models.update(p.allowed_models)
    efforts = [p.max_effort for p in group_policies]
    return Policy(
        models=None if models is None else frozenset(models),
        max_effort=None if "" in efforts else max(efforts, key=EFFORT_ORDER.index),
        web_search=any(p.web_search for p in group_policies),
        documents=any(p.documents for p in group_policies),
        max_files_per_message=_largest(p.max_files_per_message for p in group_policies),
        max_file_bytes=_largest(p.max_file_bytes for p in group_policies),
        daily_cost=_most_money((p.daily_cost for p in group_policies), "USER_DAILY_COST_BUDGET"),
        monthly_cost=_most_money(
            (p.monthly_cost for p in group_policies), "USER_MONTHLY_COST_BUDGET"
        ),
        from_groups=True,
    )


def _largest(values: Iterable[int | None]) -> int | None:
    """The largest limit; a blank one (the server's) beats any number."""
    values = list(values)
    return None if None in values else max(values)


def _most_money(values: Iterable[Decimal | None], setting: str) -> Decimal | None | Unset:
    """The most generous money budget. A blank group means the server default (`setting`; 0
    there means no limit), 0 means no limit (as in UserBudget): no limit if any group has none,
    else the largest amount. SERVER_DEFAULT when no group sets one."""
    values = list(values)
    if all(v is None for v in values):
        return SERVER_DEFAULT
    default = Decimal(str(getattr(settings, setting))) or None
    resolved = [default if v is None else (v or None) for v in values]
    return None if None in resolved else max(resolved)
