from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from chat.views import accounts, passwords
from claudeweb import health, metrics

reset_views = {
    "request": passwords.with_password_login(
        auth_views.PasswordResetView.as_view(
            template_name="accounts/password_reset.html",
            email_template_name="accounts/password_reset_email.txt",
            subject_template_name="accounts/password_reset_subject.txt",
        )
    ),
    "sent": passwords.with_password_login(
        auth_views.PasswordResetDoneView.as_view(template_name="accounts/password_reset_sent.html")
    ),
    "confirm": passwords.with_password_login(
        auth_views.PasswordResetConfirmView.as_view(
            template_name="accounts/password_reset_confirm.html"
        )
    ),
    "complete": passwords.with_password_login(
        auth_views.PasswordResetCompleteView.as_view(
            template_name="accounts/password_reset_complete.html"
        )
    ),
}

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    path(settings.ADMIN_URL_PREFIX, admin.site.urls),
    path("login/", accounts.LoginView.as_view(), name="login"),
    path("logout/", accounts.logout, name="logout"),
    # Single sign-on (404 while OIDC_ISSUER is unset); the names are mozilla-django-oidc's.
    path("oidc/authenticate/", accounts.SsoStartView.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", accounts.SsoCallbackView.as_view(), name="oidc_authentication_callback"),
    path(
        "password/",
        passwords.with_password_login(passwords.PasswordChangeView.as_view()),
        name="password_change",
    ),
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
