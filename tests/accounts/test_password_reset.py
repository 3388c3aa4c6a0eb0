"""Password reset by mail (Django's views, the app's templates) and the password change page.

The mail goes through Django's locmem outbox in tests; the console backend by default, SMTP when
EMAIL_HOST is set (docs/deploy.md).
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "a-new-long-passphrase"


@pytest.fixture
def alice_with_mail(alice):
    alice.email = "alice@example.com"
    alice.save()
    return alice


def ask_for_a_reset(email: str):
    return Client().post(reverse("password_reset"), {"email": email})


def reset_link(mail) -> str:
    [link] = re.findall(r"https?://[^/\s]+(/password/reset/\S+/)", mail.body)
    return link


def test_a_reset_mails_a_link_that_sets_the_password_once(alice_with_mail, mailoutbox):
    response = ask_for_a_reset("alice@example.com")
    assert response.status_code == 302 and response["Location"] == reverse("password_reset_done")
    [mail] = mailoutbox
    assert mail.to == ["alice@example.com"]
    assert "alice" in mail.body and mail.subject == "Reset your claudeweb password"

    browser = Client()
    form_page = browser.get(
        reset_link(mail), follow=True
    )  # Django moves the token into the session
    assert form_page.status_code == 200 and form_page.context["validlink"]
    done = browser.post(
        form_page.redirect_chain[-1][0],
        {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert done.status_code == 302 and done["Location"] == reverse("password_reset_complete")

    alice = get_user_model().objects.get(pk=alice_with_mail.pk)
    assert alice.check_password(NEW_PASSWORD) and not alice.check_password("alice-password-123")
    again = Client().get(reset_link(mail), follow=True)
    assert again.status_code == 200 and not again.context["validlink"]
    assert b"This link does not work" in again.content


def test_an_unknown_address_gets_the_same_answer_and_no_mail(alice_with_mail, mailoutbox):
    known = ask_for_a_reset("alice@example.com")
    unknown = ask_for_a_reset("nobody@example.com")
    assert (unknown.status_code, unknown["Location"]) == (known.status_code, known["Location"])
    assert [mail.to for mail in mailoutbox] == [["alice@example.com"]]
    page = Client().get(unknown["Location"])
    assert b"If an account has that address" in page.content


def test_a_reset_ends_every_session_of_the_user(alice_with_mail, mailoutbox):
    logged_in = Client()
    logged_in.force_login(alice_with_mail)
    ask_for_a_reset("alice@example.com")
    browser = Client()
    form_page = browser.get(reset_link(mailoutbox[0]), follow=True)
    browser.post(
        form_page.redirect_chain[-1][0],
        {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert not Session.objects.filter(session_key=logged_in.cookies["sessionid"].value).exists()
    assert logged_in.get("/").status_code == 302


def test_the_login_page_links_to_the_reset(client):
    assert reverse("password_reset").encode() in client.get(reverse("login")).content


def test_the_settings_page_links_to_the_password_change(client, alice):
    client.force_login(alice)
    assert reverse("password_change").encode() in client.get(reverse("chat:settings")).content


def test_the_password_change_checks_the_old_password(client, alice):
    client.force_login(alice)
    response = client.post(
        reverse("password_change"),
        {"old_password": "wrong", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert response.status_code == 200
    assert b"Your old password was entered incorrectly" in response.content
    alice.refresh_from_db()
    assert alice.check_password("alice-password-123")


def test_the_password_change_says_it_worked(client, alice):
    client.force_login(alice)
    response = client.post(
        reverse("password_change"),
        {
            "old_password": "alice-password-123",
            "new_password1": NEW_PASSWORD,
            "new_password2": NEW_PASSWORD,
        },
        follow=True,
    )
    assert b"Password changed. You were signed out everywhere else." in response.content


def test_a_username_in_the_mail_is_not_html_escaped_but_the_page_escapes_it(mailoutbox):
    """The mail is plain text; pages escape what users choose (docs/security.md)."""
    get_user_model().objects.create_user(
        "<b>mallory</b>", email="m@example.com", password="mallory-password-123"
    )
    ask_for_a_reset("m@example.com")
    assert "<b>mallory</b>" in mailoutbox[0].body
