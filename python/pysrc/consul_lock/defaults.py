"""Module-wide settings of the seed-compatible :class:`consul_lock.EphemeralLock`, with
python-consul-lock's names and defaults (so hosts on either library share keys during a
migration). Assign to them, as with python-consul-lock::

    consul_lock.defaults.consul_client = consul.Consul()
"""

from typing import Any

#: The client used when ``EphemeralLock`` gets none: a :class:`consul_lock.Client`, a py-consul or
#: python-consul ``consul.Consul`` object, or ``None`` (Consul's environment variables).
consul_client: Any = None

#: How long ``acquire`` waits for a held key, in milliseconds; 0 makes one attempt.
acquire_timeout_ms: int = 0

#: The longest a lock is held: it is released (and reported lost) after this long. The session
#: itself is renewed (its TTL is 15 s), so a crashed holder frees the key within about 30 s.
lock_timeout_seconds: int = 60 * 3

#: The key is always substituted into this pattern before locking.
lock_key_pattern: str = "locks/ephemeral/%s"
