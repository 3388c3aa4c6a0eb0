from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from chat.views import passwords
from claudeweb import health

reset_views = {
    "request": auth_views.PasswordResetView.as_view(
        template_name="accounts/password_reset.html",
        email_template_name="accounts/password_reset_email.txt",
        subject_template_name="accounts/password_reset_subject.txt",
    ),
    "sent": auth_views.PasswordResetDoneView.as_view(
        template_name="accounts/password_reset_sent.html"
    ),
    "confirm": auth_views.PasswordResetConfirmView.as_view(
        template_name="accounts/password_reset_confirm.html"
    ),
    "complete": auth_views.PasswordResetCompleteView.as_view(
        template_name="accounts/password_reset_complete.html"
    ),
}

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path(settings.ADMIN_URL_PREFIX, admin.site.urls),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password/", passwords.PasswordChangeView.as_view(), name="password_change"),
    path("password/reset/", reset_views["request"], name="password_reset"),
    path("password/reset/sent/", reset_views["sent"], name="password_reset_done"),
    path(
        "password/reset/<uidb64>/<token>/",
        reset_views["confirm"],
        name="password_reset_confirm",
    ),
    path("password/reset/done/", reset_views["complete"], name="password_reset_complete"),
    path("", include("chat.urls")),
]
