"""Which Consul client a primitive uses: a :class:`consul_lock.Client`, a py-consul or
python-consul ``consul.Consul`` object (its address, token, TLS settings and datacenter are read
from it), or ``None`` for one process-wide client from Consul's environment variables."""

from __future__ import annotations

import threading
from typing import Any

from ._errors import InvalidConfig
from ._native import Client

_lock = threading.Lock()
_env_client: Client | None = None


def default_client() -> Client:
    """The process-wide client from the environment (``CONSUL_HTTP_ADDR``, ``CONSUL_HTTP_TOKEN``, …),
    made on first use."""
    global _env_client
    with _lock:
        if _env_client is None:
            _env_client = Client.from_env()
        return _env_client


def from_consul(obj: Any) -> Client:
    """A :class:`Client` with the settings of a py-consul / python-consul ``consul.Consul`` object:
    ``obj.http.base_uri`` (scheme, host, port), ``obj.http.verify`` (bool, or a CA bundle path),
    ``obj.http.cert`` (client certificate), ``obj.token`` and ``obj.dc``."""
    http = getattr(obj, "http", None)
    base_uri = getattr(http, "base_uri", None)
    if not isinstance(base_uri, str):
        raise InvalidConfig(
            f"cannot use {type(obj).__module__}.{type(obj).__qualname__} as a Consul client: expected a "
            "consul_lock.Client or a py-consul/python-consul consul.Consul object (with .http.base_uri)"
        )
    token = getattr(obj, "token", None)
    dc = getattr(obj, "dc", None)
    verify = getattr(http, "verify", True)
    cert = getattr(http, "cert", None)
    kwargs: dict[str, Any] = {}
    if isinstance(verify, str):
        kwargs["ca_file"] = verify
    elif verify is False:
        kwargs["verify"] = False
    if isinstance(cert, (tuple, list)) and len(cert) == 2:
        kwargs["client_cert"], kwargs["client_key"] = str(cert[0]), str(cert[1])
    elif isinstance(cert, str) and cert:
        raise InvalidConfig("a client certificate needs its key file too: pass cert=(cert_file, key_file)")
    return Client(
        base_uri,
        token=token if isinstance(token, str) and token else None,
        datacenter=dc if isinstance(dc, str) and dc else None,
        **kwargs,
    )


_converted: dict[int, tuple[Any, Client]] = {}


def resolve(client: Any) -> Client:
    """The :class:`Client` for ``client`` (see the module doc)."""
    if client is None:
        return default_client()
    if isinstance(client, Client):
        return client
    key = id(client)
    with _lock:
        hit = _converted.get(key)
        if hit is not None and hit[0] is client:
            return hit[1]
    made = from_consul(client)
    with _lock:
        if len(_converted) > 64:
            _converted.clear()
        _converted[key] = (client, made)
    return made
