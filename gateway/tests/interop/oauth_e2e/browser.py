"""A scripted browser for the sign-in: plain HTTP, cookies kept, redirects followed by
hand so every hop is seen.

    authorize URL (sidecar) → consent page → POST /consent (approve)
      → fake Google's account chooser → POST (the chosen account)
      → sidecar /callback → [consent page, when asked after sign-in] → client redirect

A refusal page (403, "Access refused") is followed through its "Return to the
application" link (what its meta refresh does after a few seconds), so the client
receives `error=access_denied` at its redirect URI, as with a real browser.

`Browser.redirect_handler` / `Browser.callback_handler` plug into the official Python
SDK's `OAuthClientProvider`: the first drives the browser to the client's redirect URI
and keeps what arrived there, the second hands the code, state and iss to the SDK.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import httpx

MAX_HOPS = 12


class SignInError(Exception):
    """The sign-in ended somewhere else than the client's redirect URI."""


class AuthorizationDenied(Exception):
    """The client's redirect URI received `error=…` instead of a code."""

    def __init__(self, params: dict[str, str]):
        self.params = params
        super().__init__(
            f"authorization failed at the client's redirect: error={params.get('error')!r} "
            f"error_description={params.get('error_description')!r}"
        )


@dataclass
class Form:
    action: str
    method: str
    fields: list[tuple[str, str]] = field(default_factory=list)  # hidden inputs
    buttons: list[tuple[str, str]] = field(default_factory=list)  # submit buttons (name, value)


class _PageParser(HTMLParser):
    """Forms (hidden inputs, submit buttons), links, and meta refresh of a page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self.links: list[tuple[str, str]] = []  # (href, text)
        self.meta_refresh: str | None = None
        self._in_form: Form | None = None
        self._link: list | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self._in_form = Form(action=a.get("action", ""), method=a.get("method", "get").lower())
            self.forms.append(self._in_form)
        elif tag == "input" and self._in_form is not None:
            if a.get("type", "text") == "hidden" and "name" in a:
                self._in_form.fields.append((a["name"], a.get("value", "")))
        elif tag == "button" and self._in_form is not None:
            if a.get("type", "submit") == "submit" and "name" in a:
                self._in_form.buttons.append((a["name"], a.get("value", "")))
        elif tag == "a" and "href" in a:
            self._link = [a["href"], ""]
        elif tag == "meta" and a.get("http-equiv", "").lower() == "refresh":
            content = a.get("content", "")
            if "url=" in content:
                self.meta_refresh = content.split("url=", 1)[1]

    def handle_endtag(self, tag):
        if tag == "form":
            self._in_form = None
        elif tag == "a" and self._link is not None:
            self.links.append((self._link[0], self._link[1].strip()))
            self._link = None

    def handle_data(self, data):
        if self._link is not None:
            self._link[1] += data


def parse_page(text: str) -> _PageParser:
    p = _PageParser()
    p.feed(text)
    p.close()
    return p


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


@dataclass
class Hop:
    method: str
    url: str
    status: int
    note: str = ""


class Browser:
    """One person's browser (one cookie jar)."""

    def __init__(self, email: str, consent: str = "approve"):
        self.email = email
        self.consent = consent
        self.http = httpx.AsyncClient(follow_redirects=False, timeout=15.0)
        self.trail: list[Hop] = []
        self.pages: list[tuple[int, str]] = []  # pages shown on the way (status, text)
        self.refusal: str | None = None  # the refusal page, when one was shown
        self.landed: str | None = None  # the URL the browser ended at (client redirect)
        self.redirect_prefix: str | None = None

    async def aclose(self) -> None:
        await self.http.aclose()

    def _hop(self, r: httpx.Response, note: str = "") -> None:
        self.trail.append(Hop(r.request.method, str(r.request.url), r.status_code, note))

    def describe(self) -> str:
        return "\n".join(f"  {h.method} {h.url} -> {h.status} {h.note}" for h in self.trail)

    async def _post_form(self, url: str, pairs: list[tuple[str, str]]) -> httpx.Response:
        return await self.http.post(
            url,
            content=urlencode(pairs).encode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )

    async def _submit_consent(self, base: str, page: str) -> httpx.Response:
        forms = [f for f in parse_page(page).forms if ("action", "approve") in f.buttons]
        if not forms:
            raise SignInError(f"no consent form with an Approve button in:\n{page[:2000]}")
        form = forms[0]
        data = form.fields + [("action", self.consent)]
        r = await self._post_form(urljoin(base, form.action), data)
        self._hop(r, f"consent {self.consent}")
        return r

    async def _choose_account(self, chooser_url: str, page: str) -> httpx.Response:
        forms = [f for f in parse_page(page).forms if any(n == "email" for n, _ in f.buttons)]
        if not forms:
            raise SignInError(f"no account chooser form in:\n{page[:2000]}")
        form = forms[0]
        offered = [v for n, v in form.buttons if n == "email"]
        if self.email not in offered:
            raise SignInError(f"{self.email} is not offered by the account chooser ({offered})")
        r = await self._post_form(urljoin(chooser_url, form.action), form.fields + [("email", self.email)])
        self._hop(r, f"chose {self.email}")
        return r

    async def sign_in(self, authorize_url: str, redirect_prefix: str) -> dict[str, str]:
        """Follows the whole sign-in from authorize_url until the browser is sent to
        redirect_prefix (the client's redirect URI); returns that URL's query."""
        self.redirect_prefix = redirect_prefix
        url = authorize_url
        for _ in range(MAX_HOPS):
            if url.startswith(redirect_prefix):
                self.landed = url
                return query_of(url)
            r = await self.http.get(url)
            self._hop(r)
            if r.status_code in (301, 302, 303, 307):
                url = urljoin(url, r.headers["location"])
                continue
            text = r.text
            self.pages.append((r.status_code, text))
            page = parse_page(text)
            if r.status_code == 200 and any(("action", "approve") in f.buttons for f in page.forms):
                r = await self._submit_consent(url, text)
                if r.status_code not in (302, 303):
                    raise SignInError(f"consent answered {r.status_code}:\n{r.text[:2000]}\n{self.describe()}")
                url = urljoin(url, r.headers["location"])
                continue
            if r.status_code == 200 and any(any(n == "email" for n, _ in f.buttons) for f in page.forms):
                r = await self._choose_account(url, text)
                if r.status_code not in (302, 303):
                    raise SignInError(f"account chooser answered {r.status_code}:\n{r.text[:2000]}\n{self.describe()}")
                url = urljoin(url, r.headers["location"])
                continue
            back = [href for href, label in page.links if href.startswith(redirect_prefix)]
            if "Access refused" in text and (back or page.meta_refresh):
                # The refusal page: the person reads why, then is sent back to the client
                # (its link, or its meta refresh).
                self.refusal = text
                url = html.unescape(back[0] if back else page.meta_refresh)
                continue
            raise SignInError(
                f"sign-in stopped at HTTP {r.status_code} {url}:\n{text[:3000]}\nhops:\n{self.describe()}"
            )
        raise SignInError(f"more than {MAX_HOPS} hops:\n{self.describe()}")

    # ---- the official Python SDK's OAuthClientProvider hooks
    async def redirect_handler(self, authorization_url: str) -> None:
        redirect_uri = query_of(authorization_url).get("redirect_uri")
        if not redirect_uri:
            raise SignInError(f"authorization URL without redirect_uri: {authorization_url}")
        self.authorization_url = authorization_url
        self.result = await self.sign_in(authorization_url, redirect_uri)

    async def callback_handler(self):
        from mcp.shared.auth import AuthorizationCodeResult

        params = self.result
        if "code" not in params:
            raise AuthorizationDenied(params)
        return AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))
