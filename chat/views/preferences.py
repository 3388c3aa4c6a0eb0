"""The user's settings page: default model, own system prompt (versioned), time zone, theme."""

from __future__ import annotations

import zoneinfo

from django import forms
from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from chat import policies
from chat.claude import catalogue
from chat.conversations import preferences
from chat.models import UserSettings

SYSTEM_PROMPT_MAX_CHARS = 20_000


class SettingsForm(forms.Form):
    default_model = forms.ChoiceField(label="Default model", required=False)
    system_prompt = forms.CharField(
        label="Your system prompt",
        required=False,
        max_length=SYSTEM_PROMPT_MAX_CHARS,
        widget=forms.Textarea(attrs={"rows": 8}),
        help_text="Used by new conversations. Leave empty for the site's prompt.",
    )
    time_zone = forms.CharField(label="Time zone", max_length=64, initial="UTC")
    theme = forms.ChoiceField(label="Theme", choices=UserSettings.Theme.choices)

    def __init__(self, *args, policy: policies.Policy = policies.UNRESTRICTED, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Only the models the user's group policy allows.
        self.fields["default_model"].choices = [("", "Site default")] + [
            (m.id, m.label) for m in catalogue.all_models() if policy.allows_model(m.id)
        ]
        for name, field in self.fields.items():
            field.widget.attrs["data-testid"] = f"settings-{name}"
            if self.errors.get(name) if self.is_bound else False:
                field.widget.attrs["aria-invalid"] = "true"
                field.widget.attrs["aria-describedby"] = f"id_{name}-error"

    def clean_time_zone(self) -> str:
        name = self.cleaned_data["time_zone"].strip()
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise forms.ValidationError("Not a time zone name, e.g. Europe/Paris or UTC.") from None
        return name


@require_http_methods(["GET", "POST"])
@login_required
def settings_page(request: HttpRequest) -> HttpResponse:
    prefs = UserSettings.objects.select_related("system_prompt").filter(user=request.user).first()
    policy = policies.policy_for(request.user)
    if request.method == "POST":
        form = SettingsForm(request.POST, policy=policy)
        if form.is_valid():
            prefs = preferences.settings_save(user=request.user, **form.cleaned_data)
            flash.success(request, "Settings saved.")
            return redirect("chat:settings")
    else:
        form = SettingsForm(
            policy=policy,
            initial={
                "default_model": prefs.default_model if prefs else "",
                "system_prompt": prefs.system_prompt.text if prefs and prefs.system_prompt else "",
                "time_zone": prefs.time_zone if prefs else "UTC",
                "theme": prefs.theme if prefs else UserSettings.Theme.SYSTEM,
            },
        )
    context = {
        "form": form,
        "prompt_version": prefs.system_prompt.version if prefs and prefs.system_prompt else None,
        "zones": sorted(zoneinfo.available_timezones()),
        "theme": prefs.theme if prefs else UserSettings.Theme.SYSTEM,
        # A user of single sign-on only has no password here to change.
        "password_login": settings.PASSWORD_LOGIN and request.user.has_usable_password(),
    }
    return render(request, "chat/settings.html", context)
