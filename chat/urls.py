from django.urls import path

from chat import attachment_views, views

app_name = "chat"

urlpatterns = [
    path("", views.index, name="index"),
    path("c/new/", views.conversation_new, name="new"),
    path("c/<int:pk>/", views.conversation_detail, name="conversation"),
    path("c/<int:pk>/rename/", views.conversation_rename, name="rename"),
    path("c/<int:pk>/delete/", views.conversation_delete, name="delete"),
    path("attachments/limits/", attachment_views.limits, name="attachment_limits"),
    path("attachments/start/", attachment_views.start, name="attachment_start"),
    path("attachments/<int:pk>/finish/", attachment_views.finish, name="attachment_finish"),
    path("attachments/<int:pk>/", attachment_views.detail, name="attachment"),
]
