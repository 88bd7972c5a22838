"""What no message may repeat: credentials in URLs and the values of secret-looking variables.

Pure functions, used wherever a value is quoted back to a user (the models' validators, `empo
validate`, the operator's status messages): mask first, then cut to length, so a cut can never leave
half a secret unmasked.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

MASK = "***"
# scheme://userinfo@ : everything between '://' and the last '@' before whitespace or a quote. Wider
# than RFC 3986's userinfo on purpose (an unencoded '/' in a secret key ends the authority for a
# URL parser, not for a reader): a path holding '@' is masked too, which costs nothing in a message.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s'\"`<>]*@)")
# Environment variable names whose value is a credential. AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
# HF_TOKEN, WANDB_API_KEY, MLFLOW_TRACKING_PASSWORD, CLIENT_SECRET, ... (as RE2 for the CRD's CEL rule,
# so the API server refuses the same names).
SECRET_ENV_NAME = r"(?i)((^|_)(PASSWORD|PASSWD|TOKEN|API_?KEY|PRIVATE_KEY|CREDENTIALS?)$|(^|_)SECRET)"
_SECRET_ENV_NAME = re.compile(SECRET_ENV_NAME)
MIN_SCRUBBED = 4  # shorter "secrets" (a 1-character value) would blank out unrelated text


def has_credentials(url: str) -> bool:
    """True when `url` is scheme://user[:password]@host...: credentials that would be stored in clear.
    Also when the password holds an unencoded '/' ('http://KEY:se/cret@host', as AWS secret keys
    do): a URL parser then ends the authority at the '/', leaving a "port" that is not a number."""
    if "://" not in url:
        return False
    rest = url.split("://", 1)[1]
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        return True
    port = authority.rpartition(":")[2] if ":" in authority and not authority.endswith("]") else ""
    return bool(port) and not port.isdigit() and "@" in rest


def mask_credentials(text: str) -> str:
    """`text` with the userinfo of every URL in it replaced by ***: http://***@host:8333/x."""
    if "://" not in text or "@" not in text:
        return text
    return _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)


def shorten(text: str, limit: int = 120) -> str:
    """`text` masked, then cut to `limit` characters, saying how much was left out."""
    text = mask_credentials(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def quote(value: Any, limit: int = 120) -> str:
    """A value as a message may quote it: repr'd (so control characters and lone surrogates show as
    escapes), credentials masked, at most `limit` characters."""
    return shorten(repr(value), limit)


def is_secret_env_name(name: str) -> bool:
    return bool(_SECRET_ENV_NAME.search(name))


def secrets_in(doc: Any, limit: int = 100_000) -> set[str]:
    """Values of `doc` that no message may repeat: the userinfo of every URL-shaped string, and the
    literal `value` of every env entry whose name looks like a secret (at any depth). Bounded by
    `limit` nodes (the loader already bounds documents)."""
    found: set[str] = set()
    stack, seen = [doc], 0
    while stack and seen < limit:
        node = stack.pop()
        seen += 1
        if isinstance(node, dict):
            name = node.get("name")
            if isinstance(name, str) and is_secret_env_name(name) and "value" in node and node["value"] is not None:
                found.add(str(node["value"]))
            stack.extend(node.values())
            stack.extend(k for k in node if isinstance(k, str))
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
        elif isinstance(node, str) and "@" in node and "://" in node:
            for m in _USERINFO.finditer(node):
                userinfo = m["userinfo"][:-1]
                found.add(userinfo)
                found.update(part for part in re.split(r"[:@]", userinfo))
    return {s for s in found if len(s) >= MIN_SCRUBBED}


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with URL credentials masked and every one of `secrets` replaced by ***."""
    text = mask_credentials(text)
    for secret in sorted(secrets, key=len, reverse=True):  # the longest first: a part inside a whole
        if secret in text:
            text = text.replace(secret, MASK)
    return text
