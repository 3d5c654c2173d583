"""Sign-in end to end: the official Python SDK's OAuth client against the gateway
(auth.mode = "oauth"), the sidecar and the fake Google, with no manual step.

    SDK → gateway 401 → protected-resource metadata → sidecar metadata → DCR
        → /authorize → consent → fake Google's account chooser → /callback
        → the SDK's loopback redirect (code, state, iss) → /token → MCP calls

The scripted browser (oauth_e2e/browser.py) plays the person; everything else is the
SDK's own `OAuthClientProvider`. Backends: `grafana` (allow_groups = the SRE group's
address, as the directory and so the token carry it) and `open` (no policy, the
caller's email forwarded as X-Forwarded-Email).

mcp-remote (npm) is driven by oauth_e2e/mcp_remote_driver.mjs from
ops/scripts/oauth-e2e.sh, which runs this file too.

Run: .tools/venv/bin/python -m pytest gateway/tests/interop/test_oauth_e2e.py
(needs the binaries in target/debug and PostgreSQL on 127.0.0.1:5432, db `test`).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import anyio
import pytest
from mcp import MCPError

sys.path.insert(0, str(Path(__file__).resolve().parent))

from oauth_e2e.browser import AuthorizationDenied, Browser, query_of  # noqa: E402
from oauth_e2e.sdk import find_exception, jwt_claims, signed_in_client, text_of, tool_names  # noqa: E402
from oauth_e2e.stack import ALICE, BIN_DIR, BOB, OUTSIDER, SRE_GROUP, Stack, StackError, psql_value  # noqa: E402

pytestmark = pytest.mark.anyio

FORBIDDEN = -32003
INTERNAL = -32603
AUDIT_DEADLINE_S = 20
ACCESS_TTL_S = 30  # the sidecar's minimum: the revocation test waits for one expiry


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    pid_dir = os.environ.get("OAUTH_E2E_PID_DIR")
    s = Stack(tmp_path_factory.mktemp("oauth-e2e"), Path(pid_dir) if pid_dir else None, access_ttl_s=ACCESS_TTL_S)
    try:
        s.start()
    except StackError as e:
        pytest.fail(str(e))
    yield s
    dead = s.dead()
    logs = s.logs() if dead else ""
    s.stop()
    assert not dead, f"processes exited during the tests: {dead}\n{logs}"


@contextlib.contextmanager
def explained(stack: Stack, *browsers: Browser):
    """On failure, prints the browser hops and the servers' logs (shown by pytest)."""
    try:
        yield
    except BaseException:
        print(traceback.format_exc())
        for b in browsers:
            print(f"browser of {b.email}:\n{b.describe()}")
        print(stack.logs())
        raise


def whoami(text: str) -> dict:
    who = json.loads(text)
    assert isinstance(who.get("headers"), dict), who
    return who


async def test_alice_signs_in_with_the_sdk_and_uses_grafana(stack):
    browser = Browser(ALICE)
    unauthorized_before = stack.request_count(route="mcp", outcome="unauthorized")
    other_get_before = stack.request_count(route="other", method="GET", outcome="ok")  # the PRM
    with explained(stack, browser):
        async with signed_in_client(stack.gateway_url, browser) as s:
            # The SDK went through the whole flow by itself.
            auth_query = query_of(browser.authorization_url)
            assert browser.authorization_url.startswith(f"{stack.sidecar_url}/authorize?")
            assert auth_query["resource"] == stack.gateway_url  # RFC 8707, from the PRM
            assert auth_query["code_challenge_method"] == "S256"
            assert auth_query["redirect_uri"] == s.redirect_uri
            info = s.storage.client_info
            assert info is not None and info.client_id.startswith("mcp_"), info  # DCR
            assert auth_query["client_id"] == info.client_id
            hops = [h.url.split("?")[0] for h in browser.trail]
            assert hops[0] == f"{stack.sidecar_url}/authorize"
            assert f"{stack.sidecar_url}/consent" in hops, browser.describe()
            assert f"{stack.google_url}/authorize" in hops, browser.describe()
            assert f"{stack.sidecar_url}/callback" in hops, browser.describe()
            assert browser.landed and browser.landed.startswith(s.redirect_uri)
            assert browser.result["iss"] == stack.sidecar_url  # RFC 9207
            # The first request was refused with 401, then the PRM was fetched.
            assert stack.request_count(route="mcp", outcome="unauthorized") > unauthorized_before
            assert stack.request_count(route="other", method="GET", outcome="ok") > other_get_before

            claims = jwt_claims(s.storage.current.token.access_token)
            assert claims["iss"] == stack.sidecar_url
            assert claims["aud"] == stack.gateway_url
            assert claims["email"] == ALICE
            assert SRE_GROUP in claims["groups"], claims

            names = await tool_names(s.client)
            assert "grafana__echo" in names and "open__whoami" in names, names
            assert any(n.startswith("grafana__") for n in names)

            r = await s.client.call_tool("grafana__echo", {"text": "hello from alice"})
            assert not r.is_error, r
            assert text_of(r) == "hello from alice"

            r = await s.client.call_tool("open__whoami", {})
            who = whoami(text_of(r))
            assert who["server"] == "open"
            assert who["headers"].get("x-forwarded-email") == ALICE, who
            assert "authorization" not in who["headers"], who  # the token stays at the gateway
            assert "cookie" not in who["headers"], who

            # grafana has no forward_identity: no identity header there.
            r = await s.client.call_tool("grafana__whoami", {})
            who = whoami(text_of(r))
            assert who["server"] == "grafana"
            assert "x-forwarded-email" not in who["headers"] and "authorization" not in who["headers"], who
    await browser.aclose()


async def test_bob_sees_no_grafana_and_calling_it_is_forbidden(stack):
    browser = Browser(BOB)
    with explained(stack, browser):
        async with signed_in_client(stack.gateway_url, browser) as s:
            claims = jwt_claims(s.storage.current.token.access_token)
            assert claims["email"] == BOB and SRE_GROUP not in claims["groups"], claims

            names = await tool_names(s.client)
            assert not [n for n in names if n.startswith("grafana__")], names
            assert "open__whoami" in names, names

            with pytest.raises(MCPError) as e:
                await s.client.call_tool("grafana__echo", {"text": "let me in"})
            assert e.value.code == FORBIDDEN, e.value.error
            assert f"{BOB} may not use" in e.value.message, e.value.message
            assert "grafana" in e.value.message, e.value.message

            r = await s.client.call_tool("open__whoami", {})
            who = whoami(text_of(r))
            assert who["headers"].get("x-forwarded-email") == BOB, who
            assert "authorization" not in who["headers"], who
    await browser.aclose()


def audit_rows(stack: Stack, where: str) -> list[list[str]]:
    out = psql_value(
        "SELECT kind, coalesce(rpc_method, ''), coalesce(backend, ''), coalesce(target, ''), "
        "coalesce(rpc_error::text, 'ok'), coalesce(email, ''), http_status, coalesce(detail, '') "
        f"FROM {stack.schema}.audit_events WHERE {where} ORDER BY ts, id"
    )
    return [line.split("|") for line in out.splitlines() if line]


async def test_the_audit_log_holds_exactly_bobs_calls(stack):
    """Three tool calls with the SDK (one allowed, one refused by policy, one failing
    upstream): exactly three request rows with Bob's identity and each outcome, his
    sign-in from the sidecar beside them, and `mcp-gateway audit tail` showing them."""
    browser = Browser(BOB)
    with explained(stack, browser):
        async with signed_in_client(stack.gateway_url, browser) as s:
            client_id = s.storage.client_info.client_id
            r = await s.client.call_tool("open__echo", {"text": "recorded"})
            assert not r.is_error and text_of(r) == "recorded", r
            with pytest.raises(MCPError) as e:
                await s.client.call_tool("grafana__echo", {"text": "refused"})
            assert e.value.code == FORBIDDEN, e.value.error
            with pytest.raises(MCPError) as e:
                await s.client.call_tool("flaky__echo", {"text": "fails upstream"})
            assert e.value.code == INTERNAL, e.value.error

        calls = f"client_id = '{client_id}' AND rpc_method = 'tools/call'"
        deadline = time.monotonic() + AUDIT_DEADLINE_S
        while len(rows := audit_rows(stack, calls)) < 3:
            assert time.monotonic() < deadline, f"audit rows after {AUDIT_DEADLINE_S}s: {rows}"
            await anyio.sleep(0.1)
        assert [r[:7] for r in rows] == [
            ["request", "tools/call", "open", "open__echo", "ok", BOB, "200"],
            ["request", "tools/call", "grafana", "grafana__echo", str(FORBIDDEN), BOB, "200"],
            ["request", "tools/call", "flaky", "flaky__echo", str(INTERNAL), BOB, "200"],
        ], rows
        # The record says why: the refusal in words, the backend's own error.
        assert rows[0][7] == "", rows[0]
        assert rows[1][7].startswith(f"refused by policy: Forbidden: {BOB} may not use"), rows[1]
        assert rows[2][7] != "", rows[2]
        # Nothing else of this client was a tool call, and the sign-in is in the same log.
        assert len(audit_rows(stack, calls)) == 3
        logins = audit_rows(stack, f"client_id = '{client_id}' AND kind = 'login_ok'")
        assert len(logins) == 1 and logins[0][5] == BOB, logins

        tail = subprocess.run(
            [str(BIN_DIR / "mcp-gateway"), "audit", "--config", str(stack.workdir / "gateway.toml"),
             "tail", "--user", BOB, "-n", "1000", "--json"],
            capture_output=True, text=True, timeout=60,
        )
        assert tail.returncode == 0, tail.stderr
        shown = [json.loads(line) for line in tail.stdout.splitlines() if line.strip()]
        mine = [(e["backend"], e["target"], e.get("rpc_error")) for e in shown
                if e.get("client_id") == client_id and e.get("rpc_method") == "tools/call"]
        assert sorted(mine, key=str) == sorted([
            ("open", "open__echo", None),
            ("grafana", "grafana__echo", FORBIDDEN),
            ("flaky", "flaky__echo", INTERNAL),
        ], key=str), tail.stdout
    await browser.aclose()


async def wait_for_expiry(provider, what: str) -> None:
    """Polls (bounded) until the SDK itself holds its access token for expired."""
    deadline = time.monotonic() + ACCESS_TTL_S + 15
    while provider.context.is_token_valid():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await anyio.sleep(0.25)


async def test_removed_group_disappears_at_the_next_refresh(stack):
    browser = Browser(ALICE)
    with explained(stack, browser):
        try:
            async with signed_in_client(stack.gateway_url, browser) as s:
                first = s.storage.current.token
                assert SRE_GROUP in jwt_claims(first.access_token)["groups"]
                assert first.refresh_token, "the sidecar issued no refresh token"
                assert "grafana__echo" in await tool_names(s.client)

                # Alice leaves the SRE group at Google.
                stack.set_groups(ALICE, ["eng@example.com"])

                # Her current token still says SRE: the change is bound by the access
                # token's life (policy is evaluated from the token's claims alone).
                assert "grafana__echo" in await tool_names(s.client)

                await wait_for_expiry(s.provider, "the SDK to see its access token expire")
                sign_ins = len(browser.trail)
                names = await tool_names(s.client)  # the SDK refreshes first

                assert len(s.storage.history) == 2, "expected exactly one refresh"
                second = s.storage.current.token
                assert len(browser.trail) == sign_ins, "the SDK signed in again instead of refreshing"
                assert second.refresh_token and second.refresh_token != first.refresh_token  # rotated
                claims = jwt_claims(second.access_token)
                assert claims["email"] == ALICE
                assert SRE_GROUP not in claims["groups"], claims
                assert "eng@example.com" in claims["groups"], claims

                assert not [n for n in names if n.startswith("grafana__")], names
                assert "open__whoami" in names
                with pytest.raises(MCPError) as e:
                    await s.client.call_tool("grafana__echo", {"text": "still sre?"})
                assert e.value.code == FORBIDDEN and f"{ALICE} may not use" in e.value.message, e.value.error
                # The same MCP session goes on with the new token.
                r = await s.client.call_tool("open__whoami", {})
                assert whoami(text_of(r))["headers"].get("x-forwarded-email") == ALICE
        finally:
            stack.set_groups(ALICE, [SRE_GROUP, "eng@example.com"])
    await browser.aclose()


async def test_outsider_gets_access_denied_and_no_session(stack):
    browser = Browser(OUTSIDER)
    ok_before = stack.request_count(route="mcp", method="initialize", outcome="ok")
    mcp_before = {
        o: stack.request_count(route="mcp", outcome=o)
        for o in ("ok", "rpc_error", "client_error", "server_error", "forbidden", "unauthorized")
    }
    with explained(stack, browser):
        with pytest.raises(BaseException) as raised:
            async with signed_in_client(stack.gateway_url, browser) as s:
                await tool_names(s.client)
        denied = find_exception(raised.value, AuthorizationDenied)
        assert denied is not None, f"expected AuthorizationDenied, got {raised.value!r}"

        # The person saw the refusal page, and the client got access_denied at its
        # redirect URI, with its state and the issuer.
        assert browser.refusal is not None, browser.describe()
        assert "other.org" in browser.refusal and "may not use this service" in browser.refusal
        assert any(h.status == 403 and h.url.startswith(f"{stack.sidecar_url}/callback") for h in browser.trail), (
            browser.describe()
        )
        params = denied.params
        assert params["error"] == "access_denied", params
        assert "code" not in params, params
        assert params.get("state") == query_of(browser.authorization_url)["state"], params
        assert params.get("iss") == stack.sidecar_url, params

        # No session at the gateway: every /mcp request of the attempt was refused 401.
        assert stack.request_count(route="mcp", method="initialize", outcome="ok") == ok_before
        for outcome, before in mcp_before.items():
            after = stack.request_count(route="mcp", outcome=outcome)
            if outcome == "unauthorized":
                assert after > before, "the SDK's first request should have been refused"
            else:
                assert after == before, f"/mcp answered {after - before} request(s) with outcome {outcome}"
        # Nothing was issued by the sidecar either.
        assert stack.sidecar_count(f"users WHERE email = '{OUTSIDER}'") == 0
        assert stack.sidecar_count(f"authorization_codes WHERE email = '{OUTSIDER}'") == 0
        assert stack.sidecar_count(f"token_families WHERE email = '{OUTSIDER}'") == 0
    await browser.aclose()
