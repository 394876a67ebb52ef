"""Where a sign-in returns to: the console's pages and the integrations page the OAuth providers
redirect to, never another site."""

import pytest

from web.routes.account import _safe_next


@pytest.mark.parametrize(
    "target",
    [
        "/console",
        "/console/invoices?status=overdue",
        # A sign-in that expired during a provider's consent keeps the callback's code and state.
        "/admin/settings/integrations?code=abc&state=xyz",
    ],
)
def test_a_sign_in_returns_to_our_own_pages(target: str) -> None:
    assert _safe_next(target) == target


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/console", "//evil.example/console", "/admin", "/v1/admin/integrations", "", None],
)
def test_a_sign_in_never_returns_elsewhere(target: object) -> None:
    assert _safe_next(target) == "/console"
