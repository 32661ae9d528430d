"""Who may talk to the service: the Host check (DNS rebinding), the token (a FastAPI dependency,
so the OpenAPI document shows it), and an access log that never writes the token down."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
from urllib.parse import parse_qsl, urlencode

from fastapi import Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

TOKEN_COOKIE = "deepvision_token"

# A URL authority as RFC 3986 writes it, less userinfo: one host (a name, an IPv4 address, or
# an IPv6 literal in brackets) and an optional port; nothing else (no '@', no blanks, no path).
_AUTHORITY = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]+))"
                        r"(?::(?P<port>[0-9]{1,5}))?")

bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                    description="Authorization: Bearer TOKEN (serve --token)")
cookie = APIKeyCookie(name=TOKEN_COOKIE, auto_error=False, scheme_name="cookie",
                      description="set by opening the page once with ?token=TOKEN")


def host_of(header: str) -> str | None:
    """The host a Host header names, lower-case (an IPv6 literal without brackets); None for
    anything that is not exactly one host and an optional port."""
    found = _AUTHORITY.fullmatch(header)
    if found is None or (found["port"] is not None and int(found["port"]) > 65535):
        return None
    if found["v6"] is not None:
        try:
            return str(ipaddress.IPv6Address(found["v6"]))
        except ValueError:
            return None
    name = found["name"].lower()
    return name[:-1] if name.endswith(".") and len(name) > 1 else name


def is_local_host(host: str | None) -> bool:
    """A name no other site can make a browser send: localhost or a loopback address literal.
    (A page elsewhere that resolves its own name to 127.0.0.1 still sends its own name.)"""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def presented(credentials: HTTPAuthorizationCredentials | None,
              from_cookie: str | None) -> str | None:
    """The token the client sent by header, else by cookie (never from the query string)."""
    if credentials is not None and credentials.scheme.lower() == "bearer":
        return credentials.credentials
    return from_cookie


class RedactToken(logging.Filter):
    """uvicorn's access log line names the request target: `token=` values become `***`."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact(args[2]), *args[3:])
        return True


def redact(target: str) -> str:
    path, sep, query = target.partition("?")
    if not sep or "token" not in query.lower():
        return target
    pairs = [(k, "***" if k.lower() == "token" else v)
             for k, v in parse_qsl(query, keep_blank_values=True)]
    return f"{path}?{urlencode(pairs, safe='*')}"


def without_token(request: Request) -> str:
    """The page's URL less its ?token=: where a browser goes once the cookie is set."""
    rest = [(k, v) for k, v in request.query_params.multi_items() if k.lower() != "token"]
    return request.url.path + (f"?{urlencode(rest)}" if rest else "")
