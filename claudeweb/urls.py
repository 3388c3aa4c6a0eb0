from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from chat.views import accounts
from claudeweb import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path(settings.ADMIN_URL_PREFIX, admin.site.urls),
    path("login/", accounts.LoginView.as_view(), name="login"),
    path("logout/", accounts.logout, name="logout"),
    # Single sign-on (404 while OIDC_ISSUER is unset); the names are mozilla-django-oidc's.
    path("oidc/authenticate/", accounts.SsoStartView.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", accounts.SsoCallbackView.as_view(), name="oidc_authentication_callback"),
    path("", include("chat.urls")),
]
