"""Admin for uploaded images.

Rows are made by uploads, never by hand: everything is read-only. Deleting a row deletes its
S3 object too. Thumbnails are presigned GETs minted while the page renders.
"""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html

from chat.models import Attachment
from chat.uploads import attachments, storage
from chat.uploads.errors import AttachmentError

LIST_THUMB_PX = 64
DETAIL_THUMB_PX = 400


def _thumbnail(obj: Attachment, box_px: int) -> str:
    if obj.state != Attachment.State.VERIFIED or not obj.width or not obj.height:
        return "—"
    try:
        url = storage.presigned_get_url(obj)
    except AttachmentError:
        return "(storage unreachable)"
    scale = min(1.0, box_px / max(obj.width, obj.height))
    return format_html(
        '<a href="{}" target="_blank" rel="noopener noreferrer">'
        '<img src="{}" alt="{}" width="{}" height="{}" loading="lazy"></a>',
        url,
        url,
        obj.original_name or "image",
        max(1, round(obj.width * scale)),
        max(1, round(obj.height * scale)),
    )


@admin.register(Attachment)
class AttachmentAdmin(admin.ModelAdmin):
    list_display = (
        "thumbnail",
        "__str__",
        "owner",
        "state",
        "kind",
        "content_type",
        "size",
        "dimensions",
        "sent",
        "created_at",
    )
    list_filter = ("state", "kind", "content_type", ("message", admin.EmptyFieldListFilter))
    search_fields = ("original_name", "key", "sha256", "owner__username", "reject_reason")
    date_hierarchy = "created_at"
    list_select_related = ("owner",)
    raw_id_fields = ("owner", "message")
    fields = (
        "preview",
        "owner",
        "message",
        "original_name",
        "key",
        "kind",
        "content_type",
        "byte_size",
        "width",
        "height",
        "page_count",
        "has_text_layer",
        "sha256",
        "state",
        "reject_reason",
        "created_at",
        "verified_at",
    )
    readonly_fields = fields

    @admin.display(description="image")
    def thumbnail(self, obj: Attachment) -> str:
        return _thumbnail(obj, LIST_THUMB_PX)

    @admin.display(description="image")
    def preview(self, obj: Attachment) -> str:
        return _thumbnail(obj, DETAIL_THUMB_PX)

    @admin.display(description="size", ordering="byte_size")
    def size(self, obj: Attachment) -> str:
        if obj.byte_size is None:
            return "—"
        return f"{obj.byte_size / 1024:,.1f} KB"

    @admin.display(description="pixels")
    def dimensions(self, obj: Attachment) -> str:
        return f"{obj.width}×{obj.height}" if obj.width and obj.height else "—"

    @admin.display(description="sent", boolean=True)
    def sent(self, obj: Attachment) -> bool:
        return obj.message_id is not None

    def has_add_permission(self, request) -> bool:
        return False

    def delete_model(self, request, obj: Attachment) -> None:
        attachments.delete_attachments([obj])

    def delete_queryset(self, request, queryset) -> None:
        attachments.delete_attachments(list(queryset))
