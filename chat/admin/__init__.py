"""Django admin: conversations, messages, the read-only usage ledger, budgets, users, group
policies, uploads.

Each module registers its own models on the default site (claudeweb.admin.AdminSite); Django's
admin autodiscovery imports this package, which imports them.
"""

from chat.admin import conversations, ledger, policies, uploads, users

__all__ = ["conversations", "ledger", "policies", "uploads", "users"]
