"""The admin site: Django's, with the usage dashboard as one more admin view.

Installed as the default site (claudeweb.apps.AdminConfig, named in INSTALLED_APPS), so
`admin.site` and `@admin.register` are this site everywhere. It lives outside the chat.admin
package: importing the site must not import the modules that register on it.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse

from chat.accounts import sessions
from chat.ledger.dashboard import dashboard_view
from chat.views.accounts import password_login_refused


class AdminSite(admin.AdminSite):
    def get_urls(self) -> list:
        # admin_view gives the dashboard the admin's login redirect for non-staff.
        dashboard = self.admin_view(dashboard_view)
        return [path("usage/", dashboard, name="usage_dashboard"), *super().get_urls()]

    def login(self, request, extra_context=None):
        """With PASSWORD_LOGIN off, the admin's password form is refused like the site's: staff
        sign in on the site's login page (single sign-on) and come back."""
        if settings.PASSWORD_LOGIN:
            return super().login(request, extra_context)
        if request.method == "POST":
            return password_login_refused(request)
        if request.user.is_authenticated:
            # Signed in but not staff: the admin's password form cannot help (and the site's
            # login page would send them straight back here).
            if not (request.user.is_active and request.user.is_staff):
                raise PermissionDenied
            return HttpResponseRedirect(reverse("admin:index", current_app=self.name))
        next_url = request.GET.get("next") or reverse("admin:index", current_app=self.name)
        return HttpResponseRedirect(f"{reverse('login')}?{urlencode({'next': next_url})}")

    def password_change(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        # As the site's own page: the new password ended every session of the user, and Django
        # gave this one a new key, recorded here so that it can be ended in turn.
        response = super().password_change(request, extra_context)
        if request.method == "POST" and response.status_code == 302:
            sessions.record_login(user=request.user, session_key=request.session.session_key)
        return response
