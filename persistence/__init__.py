"""Stores: where the engine's effects become durable (see engine.runtime.store.Store)."""

from persistence.memory import MemoryStore

__all__ = ["MemoryStore"]
