"""Docker image references, read the way the engine reads them, and loopback registries.

The engine parses `fromImage`, `tag`, an inspect's name and a create's `Image` with
distribution's reference grammar and normalises them (`alpine` is `docker.io/library/alpine`,
`index.docker.io` is `docker.io`). The proxy compares references only in that normal form, and
refuses whatever it cannot read exactly as the engine would: upper case where the engine's
versions disagree, a 64-hex name (the engine reads it as an image id), anything longer than the
grammar allows.

Pure: no I/O, no resolver.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Final

DEFAULT_DOMAIN: Final = "docker.io"
LEGACY_DEFAULT_DOMAIN: Final = "index.docker.io"
OFFICIAL_REPO_PREFIX: Final = "library/"
MAX_NAME_LENGTH: Final = 255

_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"(?P<host>{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")
_IDENTIFIER = re.compile(r"[a-f0-9]{64}")


@dataclass(frozen=True, order=True)
class ImageRef:
    """A normalised reference: `domain/path[:tag][@digest]`."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    @property
    def name_only(self) -> bool:
        return self.tag is None and self.digest is None

    def defaulted(self) -> ImageRef:
        """As the engine looks it up: a bare name means its `latest` tag."""
        if self.name_only:
            return ImageRef(self.domain, self.path, "latest", None)
        return self

    @property
    def host(self) -> str:
        """The registry's host, without its port (brackets kept for IPv6)."""
        match = _DOMAIN.fullmatch(self.domain)
        return match["host"] if match else self.domain


def _split_domain(name: str) -> tuple[str, str] | None:
    first, slash, rest = name.partition("/")
    if not slash or ("." not in first and ":" not in first and first != "localhost"):
        if first != first.lower():
            return None  # a registry for newer engines, a bad repository for older ones
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def parse(text: str) -> ImageRef | None:
    """The normalised reference, or None when the engine might read `text` differently."""
    if not text or len(text) > 512 or _IDENTIFIER.fullmatch(text):
        return None
    rest, at, digest = text.partition("@")
    if at and _DIGEST.fullmatch(digest) is None:
        return None
    name, tag = rest, None
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        name, tag = rest[:colon], rest[colon + 1 :]
        if _TAG.fullmatch(tag) is None:
            return None
    split = _split_domain(name)
    if split is None:
        return None
    domain, path = split
    if _DOMAIN.fullmatch(domain) is None:
        return None
    if not all(_PATH_COMPONENT.fullmatch(part) for part in path.split("/")):
        return None
    if len(domain) + 1 + len(path) > MAX_NAME_LENGTH:
        return None
    return ImageRef(domain, path, tag, digest or None)


def pull_reference(from_image: str, tag: str | None) -> ImageRef | str:
    """What `POST /images/create?fromImage=…&tag=…` pulls, or why the proxy will not say.

    As the engine does it: a `tag` that is a digest replaces the reference's tag and digest, a
    plain `tag` replaces its tag (keeping a digest). A reference with neither a tag nor a digest
    pulls *every* tag of the repository, which the orchestrator never asks for.
    """
    ref = parse(from_image)
    if ref is None:
        return "fromImage is not an image reference the proxy can check"
    if tag is not None:
        if _DIGEST.fullmatch(tag):
            ref = ImageRef(ref.domain, ref.path, None, tag)
        elif _TAG.fullmatch(tag):
            ref = ImageRef(ref.domain, ref.path, tag, ref.digest)
        else:
            return "tag is not a tag or a digest"
    if ref.name_only:
        return "a pull without a tag or digest would pull every tag of the repository"
    return ref


def loopback_registry(ref: ImageRef) -> bool:
    """Whether the registry is the engine host itself: 127.0.0.0/8, 0.0.0.0/8, ::1, localhost.

    The engine resolves the name on its own host, so `localhost` and every spelling the C
    library reads as a loopback IPv4 address (`127.1`, `2130706433`, `0x7f.1`) count.
    """
    host = ref.host
    if host.startswith("["):
        try:
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return True  # not an address the proxy can classify: treat it as local
        mapped = address.ipv4_mapped
        if mapped is not None:
            return mapped.is_loopback or mapped in ipaddress.IPv4Network("0.0.0.0/8")
        return address.is_loopback or address.is_unspecified
    lowered = host.lower()
    if lowered == "localhost" or lowered.endswith(".localhost"):
        return True
    try:
        packed = socket.inet_aton(host)
    except OSError:
        return False
    return packed[0] in (0, 127)
