from django.urls import path

from chat import attachment_views, export, settings_views, views

app_name = "chat"

urlpatterns = [
    path("", views.index, name="index"),
    path("c/new/", views.conversation_new, name="new"),
    path("c/import/", export.import_conversation, name="import"),
    path("c/<int:pk>/", views.conversation_detail, name="conversation"),
    path("c/<int:pk>/messages/", views.conversation_messages, name="messages"),
    path("c/<int:pk>/rename/", views.conversation_rename, name="rename"),
    path("c/<int:pk>/delete/", views.conversation_delete, name="delete"),
    path("c/<int:pk>/trash/", views.conversation_trash, name="trash"),
    path("c/<int:pk>/restore/", views.conversation_restore, name="restore"),
    path("c/<int:pk>/pin/", views.conversation_pin, name="pin"),
    path("c/<int:pk>/archive/", views.conversation_archive, name="archive"),
    path("c/<int:pk>/thinking/", views.conversation_thinking, name="thinking"),
    path("c/<int:pk>/export.json", export.export_json, name="export_json"),
    path("c/<int:pk>/export.md", export.export_md, name="export_md"),
    path("settings/", settings_views.settings_page, name="settings"),
    path("attachments/limits/", attachment_views.limits, name="attachment_limits"),
    path("attachments/start/", attachment_views.start, name="attachment_start"),
    path("attachments/<int:pk>/finish/", attachment_views.finish, name="attachment_finish"),
    path("attachments/<int:pk>/", attachment_views.detail, name="attachment"),
]
