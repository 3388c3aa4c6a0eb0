"""A user's preferences and the system prompts conversations pin."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from chat.claude import catalogue
from chat.models import SystemPrompt


def current_system_prompt(*, name: str = "default") -> SystemPrompt:
    """The newest version of a prompt; a changed setting text makes a new version.

    Conversations pin the version they started with, so their prefix stays byte-identical.
    """
    text = settings.CLAUDE_SYSTEM_PROMPT
    latest = SystemPrompt.objects.filter(name=name).order_by("-version").first()
    if latest is not None and latest.text == text:
        return latest
    with transaction.atomic():
        version = (latest.version if latest else 0) + 1
        try:
            with transaction.atomic():
                return SystemPrompt.objects.create(name=name, version=version, text=text)
        except IntegrityError:  # another process made it first
            return SystemPrompt.objects.get(name=name, version=version)


def default_model(prefs) -> str:
    """The user's own default model while the catalogue lists it, else CLAUDE_DEFAULT_MODEL."""
    chosen = prefs.default_model if prefs is not None else ""
    if chosen and catalogue.find_model(chosen) is not None:
        return chosen
    return settings.CLAUDE_DEFAULT_MODEL


def user_prompt_name(user: AbstractBaseUser) -> str:
    return f"user:{user.pk}"


def settings_save(
    *,
    user: AbstractBaseUser,
    default_model: str,
    system_prompt: str,
    time_zone: str,
    theme: str,
):
    """Save a user's preferences. A changed system prompt becomes a new version of the user's
    prompt (`user:<id>`); an empty one goes back to the site's prompt. Callers validate."""
    from chat.models import UserSettings

    with transaction.atomic():
        prefs, _ = UserSettings.objects.select_for_update().get_or_create(user=user)
        text = system_prompt.strip()
        if not text:
            prefs.system_prompt = None
        elif prefs.system_prompt is None or prefs.system_prompt.text != text:
            name = user_prompt_name(user)
            latest = SystemPrompt.objects.filter(name=name).order_by("-version").first()
            prefs.system_prompt = SystemPrompt.objects.create(
                name=name, version=(latest.version if latest else 0) + 1, text=text
            )
        prefs.default_model = default_model
        prefs.time_zone = time_zone
        prefs.theme = theme
        prefs.save()
    return prefs
