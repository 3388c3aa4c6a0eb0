"""The admin site: Django's, with the usage dashboard as one more admin view.

Installed as the default site (claudeweb.apps.AdminConfig, named in INSTALLED_APPS), so
`admin.site` and `@admin.register` are this site everywhere. It lives outside the chat.admin
package: importing the site must not import the modules that register on it.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import path

from chat.accounts import sessions
from chat.ledger.dashboard import dashboard_view


class AdminSite(admin.AdminSite):
    def get_urls(self) -> list:
        # admin_view gives the dashboard the admin's login redirect for non-staff.
        dashboard = self.admin_view(dashboard_view)
        return [path("usage/", dashboard, name="usage_dashboard"), *super().get_urls()]

    def password_change(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        # As the site's own page: the new password ended every session of the user, and Django
        # gave this one a new key, recorded here so that it can be ended in turn.
        response = super().password_change(request, extra_context)
        if request.method == "POST" and response.status_code == 302:
            sessions.record_login(user=request.user, session_key=request.session.session_key)
        return response
