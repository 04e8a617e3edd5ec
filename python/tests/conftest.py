"""Fixtures: one Consul dev agent for the whole run (a test that needs it fails if it cannot
start; nothing is skipped), a client for it, and a unique key prefix per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import consul_lock
import pytest
from consul_dev import ConsulDev


@pytest.fixture(scope="session")
def agent() -> Iterator[ConsulDev]:
    dev = ConsulDev()
    os.environ["CONSUL_HTTP_ADDR"] = dev.addr  # for consul.Consul() and Client.from_env()
    yield dev
    dev.stop()


@pytest.fixture
def client(agent: ConsulDev) -> consul_lock.Client:
    return consul_lock.Client(agent.addr)


@pytest.fixture
def prefix() -> str:
    return f"pytest/{uuid.uuid4().hex[:12]}"
