"""The admin site: Django's, with the usage dashboard as one more admin view.

Installed as the default site (claudeweb.apps.AdminConfig, named in INSTALLED_APPS), so
`admin.site` and `@admin.register` are this site everywhere. It lives outside the chat.admin
package: importing the site must not import the modules that register on it.
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from chat.ledger.dashboard import dashboard_view


class AdminSite(admin.AdminSite):
    def get_urls(self) -> list:
        # admin_view gives the dashboard the admin's login redirect for non-staff.
        dashboard = self.admin_view(dashboard_view)
        return [path("usage/", dashboard, name="usage_dashboard"), *super().get_urls()]
