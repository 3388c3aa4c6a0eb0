"""Admin for uploaded images (registered from chat/admin.py)."""
