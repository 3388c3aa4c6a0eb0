import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

DEFAULT_PASSWORD = "demo-password-change-me"  # noqa: S105 (a development login, printed on start)


class Command(BaseCommand):
    help = "Create the demo login (DEMO_USERNAME / DEMO_PASSWORD) if it does not exist."

    def handle(self, *args, **options) -> None:
        username = os.environ.get("DEMO_USERNAME", "demo")
        password = os.environ.get("DEMO_PASSWORD", DEFAULT_PASSWORD)
        User = get_user_model()
        user, created = User.objects.get_or_create(username=username)
        if created:
            user.set_password(password)
            user.is_staff = True
            user.is_superuser = True
            user.save()
            self.stdout.write(f"Created the demo login: {username} / {password}")
        else:
            self.stdout.write(f"Demo login exists: {username} (password unchanged)")
