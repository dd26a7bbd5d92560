"""Test helpers, public so users can test their own attribution: a fake provider server
speaking the real APIs' wire shapes, and an in-memory tokentrail pipeline."""

from tokentrail.testing.server import FakeProviderServer, FakeRequest, FakeResponse

__all__ = ["FakeProviderServer", "FakeRequest", "FakeResponse"]
