"""Users from a provider's claims: found by (issuer, sub), created on first sign-in, updated
from the claims at every sign-in, and their groups synced from the groups claim."""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser, Group
from django.db import IntegrityError, transaction
from django.utils import timezone

from chat.models import Identity, SsoGroupMembership

USERNAME_MAX = 150  # Django's User.username
NAME_MAX = 150  # first_name, last_name
GROUP_NAME_MAX = 150  # Group.name
# Django's username validator allows letters, digits and @ . + - _.
NOT_IN_USERNAME = re.compile(r"[^\w.@+-]")


class ClaimsError(ValueError):
    """The claims cannot make a user (no `sub`)."""


SIGN_IN_ATTEMPTS = 3


def sign_in(*, issuer: str, claims: dict) -> AbstractUser:
    """The user of (issuer, claims["sub"]): created on first sign-in, else updated from the
    claims (username, email, names); then their groups are synced from the groups claim.

    Two first sign-ins of one account at once (two tabs, a double click) both find no identity
    and both create one; the second insert waits for the first transaction and then fails on
    the unique (issuer, sub) or username: it is tried again and finds the user the first made.

    Raises ClaimsError when `sub` is missing.
    """
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise ClaimsError("the provider sent no sub claim")
    attempt = 1
    while True:
        try:
            with transaction.atomic():
                return _sign_in(issuer=issuer, subject=subject, claims=claims)
        except IntegrityError:
            if attempt == SIGN_IN_ATTEMPTS:
                raise
            attempt += 1


def _sign_in(*, issuer: str, subject: str, claims: dict) -> AbstractUser:
    identity = (
        Identity.objects.select_for_update()
        .select_related("user")
        .filter(issuer=issuer, subject=subject)
        .first()
    )
    if identity is None:
        user = get_user_model()(username=unique_username(wanted_username(claims, subject)))
        user.set_unusable_password()
        apply_profile(user, claims)
        user.save()
        identity = Identity.objects.create(user=user, issuer=issuer, subject=subject)
    else:
        user = identity.user
        username = wanted_username(claims, subject)
        if not owns_username(user.username, username):
            user.username = unique_username(username, exclude_pk=user.pk)
        apply_profile(user, claims)
        user.save()
    identity.last_login_at = timezone.now()
    identity.save(update_fields=["last_login_at"])
    sync_groups(user=user, names=group_names(claims))
    return user


def wanted_username(claims: dict, subject: str) -> str:
    """The username claim (OIDC_USERNAME_CLAIM), else the email's local part, else the sub,
    reduced to the characters Django allows."""
    raw = claims.get(settings.OIDC_USERNAME_CLAIM)
    if not isinstance(raw, str) or not raw.strip():
        email = claims.get("email")
        raw = email.split("@")[0] if isinstance(email, str) and email else subject
    cleaned = NOT_IN_USERNAME.sub("_", raw.strip())[: USERNAME_MAX - 8]
    return cleaned or "user"


def owns_username(current: str, wanted: str) -> bool:
    """True when `current` is `wanted` or what unique_username made of it (wanted-2, …)."""
    return current == wanted or re.fullmatch(re.escape(wanted) + r"-\d+", current) is not None


def unique_username(wanted: str, *, exclude_pk: int | None = None) -> str:
    """`wanted`, or `wanted-2`, `wanted-3`, … when another user has it."""
    users = get_user_model().objects.exclude(pk=exclude_pk)
    candidate, n = wanted, 1
    while users.filter(username__iexact=candidate).exists():
        n += 1
        candidate = f"{wanted}-{n}"
    return candidate


PROFILE_CLAIMS = (("email", "email"), ("first_name", "given_name"), ("last_name", "family_name"))


def apply_profile(user: AbstractUser, claims: dict) -> None:
    for field, claim in PROFILE_CLAIMS:
        value = claims.get(claim)
        if isinstance(value, str):
            setattr(user, field, value.strip()[: 254 if field == "email" else NAME_MAX])


def group_names(claims: dict) -> set[str]:
    """The group names in OIDC_GROUPS_CLAIM (a list, or one string); none when it is absent."""
    raw = claims.get(settings.OIDC_GROUPS_CLAIM)
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        return set()
    return {name.strip()[:GROUP_NAME_MAX] for name in raw if isinstance(name, str) and name.strip()}


def sync_groups(*, user: AbstractUser, names: set[str]) -> None:
    """Make the user's single sign-on groups exactly `names` (the rule in docs/admin.md).

    Groups named are created if missing and joined; a group joined this way is recorded
    (SsoGroupMembership). Groups no longer named are left only when that record says single
    sign-on made the membership; memberships an admin made by hand stay.
    """
    groups = {group.name: group for group in Group.objects.filter(name__in=names)}
    for name in names - groups.keys():
        groups[name], _ = Group.objects.get_or_create(name=name)
    current = set(user.groups.values_list("pk", flat=True))
    managed = dict(SsoGroupMembership.objects.filter(user=user).values_list("group_id", "pk"))
    # A record whose membership an admin removed by hand is stale: forget it (re-added below).
    stale = [pk for group_pk, pk in managed.items() if group_pk not in current]
    SsoGroupMembership.objects.filter(pk__in=stale).delete()
    managed = {g: pk for g, pk in managed.items() if g in current}
    wanted = {group.pk for group in groups.values()}
    joining = wanted - current
    user.groups.add(*joining)
    SsoGroupMembership.objects.bulk_create(
        [SsoGroupMembership(user=user, group_id=pk) for pk in joining]
    )
    leaving = set(managed) - wanted
    user.groups.remove(*leaving)
    SsoGroupMembership.objects.filter(user=user, group_id__in=leaving).delete()
