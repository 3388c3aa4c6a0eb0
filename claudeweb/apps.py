from django.contrib.admin import apps


class AdminConfig(apps.AdminConfig):
    """Django's admin app, with the site that adds the usage dashboard."""

    default_site = "claudeweb.admin.AdminSite"
