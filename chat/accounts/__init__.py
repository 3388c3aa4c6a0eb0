"""Accounts from single sign-on (OpenID Connect): the provider's discovery document, the
authentication backend that matches users by (issuer, sub), and the group sync.

Off while OIDC_ISSUER is empty; see docs/admin.md, "Single sign-on".
"""
