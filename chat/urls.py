from django.urls import path

from chat.views import export, feedback, pages, preferences, uploads

app_name = "chat"

urlpatterns = [
    path("", pages.index, name="index"),
    path("c/new/", pages.conversation_new, name="new"),
    path("c/list/", pages.conversation_list, name="list"),
    path("c/import/", export.import_conversation, name="import"),
    path("c/<int:pk>/", pages.conversation_detail, name="conversation"),
    path("c/<int:pk>/messages/", pages.conversation_messages, name="messages"),
    path("c/<int:pk>/messages/<int:message_id>/feedback/", feedback.rate, name="message_feedback"),
    path("c/<int:pk>/rename/", pages.conversation_rename, name="rename"),
    path("c/<int:pk>/delete/", pages.conversation_delete, name="delete"),
    path("c/<int:pk>/trash/", pages.conversation_trash, name="trash"),
    path("c/<int:pk>/restore/", pages.conversation_restore, name="restore"),
    path("c/<int:pk>/pin/", pages.conversation_pin, name="pin"),
    path("c/<int:pk>/archive/", pages.conversation_archive, name="archive"),
    path("c/<int:pk>/thinking/", pages.conversation_thinking, name="thinking"),
    path("c/<int:pk>/web-search/", pages.conversation_web_search, name="web_search"),
    path("c/<int:pk>/export.json", export.export_json, name="export_json"),
    path("c/<int:pk>/export.md", export.export_md, name="export_md"),
    path("settings/", preferences.settings_page, name="settings"),
    path("attachments/limits/", uploads.limits, name="attachment_limits"),
    path("attachments/start/", uploads.start, name="attachment_start"),
    path("attachments/<int:pk>/finish/", uploads.finish, name="attachment_finish"),
    path("attachments/<int:pk>/", uploads.detail, name="attachment"),
]
