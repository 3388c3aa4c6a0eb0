from django.urls import path

from chat import views

app_name = "chat"

urlpatterns = [
    path("", views.index, name="index"),
    path("c/new/", views.conversation_new, name="new"),
    path("c/<int:pk>/", views.conversation_detail, name="conversation"),
    path("c/<int:pk>/rename/", views.conversation_rename, name="rename"),
    path("c/<int:pk>/delete/", views.conversation_delete, name="delete"),
]
