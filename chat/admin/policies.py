"""Group policies, edited on the group's page (Authentication › Groups): what the group's members
may use (chat/policies.py computes a user's effective policy; docs/admin.md)."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import admin as auth_admin
from django.contrib.auth.models import Group

from chat.claude import catalogue
from chat.models import GroupPolicy


class GroupPolicyForm(forms.ModelForm):
    allowed_models = forms.MultipleChoiceField(
        label="Models",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every model of the catalogue.",
    )

    class Meta:
        model = GroupPolicy
        fields = (
            "allowed_models",
            "max_effort",
            "web_search",
            "documents",
            "max_files_per_message",
            "max_file_bytes",
            "daily_cost",
            "monthly_cost",
        )
        help_texts = {
            "max_effort": "Blank: any effort (low < medium < high < xhigh < max).",
            "max_files_per_message": "Blank: the server's limit (IMAGE_MAX_PER_MESSAGE).",
            "max_file_bytes": "Blank: the server's limits for images, PDFs and text files.",
            "daily_cost": "Blank: the server default; 0: no limit.",
            "monthly_cost": "Blank: the server default; 0: no limit.",
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        listed = [(m.id, f"{m.label} ({m.id})") for m in catalogue.all_models()]
        known = {model_id for model_id, _ in listed}
        # An id saved before it left the catalogue stays visible, so saving keeps or drops it
        # on purpose.
        saved = [
            (i, f"{i} (not in the catalogue)") for i in self.initial.get("allowed_models") or []
        ]
        self.fields["allowed_models"].choices = listed + [c for c in saved if c[0] not in known]

    def clean_max_files_per_message(self) -> int | None:
        value = self.cleaned_data["max_files_per_message"]
        if value is not None and value > settings.IMAGE_MAX_PER_MESSAGE:
            raise forms.ValidationError(
                f"At most the server's limit, {settings.IMAGE_MAX_PER_MESSAGE} files."
            )
        return value

    def clean_max_file_bytes(self) -> int | None:
        value = self.cleaned_data["max_file_bytes"]
        largest = max(
            settings.IMAGE_UPLOAD_MAX_BYTES,
            settings.DOCUMENT_MAX_BYTES,
            settings.TEXT_DOCUMENT_MAX_BYTES,
        )
        if value is not None and value > largest:
            raise forms.ValidationError(f"At most the server's largest limit, {largest:,} bytes.")
        return value


class GroupPolicyInline(admin.StackedInline):
    model = GroupPolicy
    form = GroupPolicyForm
    max_num = 1
    extra = 1
    # One policy a group: Django heads the inline with verbose_name.
    verbose_name = (
        "Policy (members get the most generous of their groups' policies; a user in no group "
        "with a policy gets the server's defaults)"
    )


admin.site.unregister(Group)  # registered again below, with its policy


@admin.register(Group)
class GroupAdmin(auth_admin.GroupAdmin):
    inlines = (GroupPolicyInline,)
    list_display = ("name", "policy_summary")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("chat_policy")

    @admin.display(description="Policy")
    def policy_summary(self, group: Group) -> str:
        policy = getattr(group, "chat_policy", None)
        if policy is None:
            return "—"
        parts = [
            ", ".join(policy.allowed_models) if policy.allowed_models else "all models",
            f"effort ≤ {policy.max_effort}" if policy.max_effort else "any effort",
            "web search" if policy.web_search else "no web search",
            "documents" if policy.documents else "no documents",
        ]
        return "; ".join(parts)
