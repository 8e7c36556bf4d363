"""creditd's engine: the pure credit state machine (`engine.core`) and the actor runtime
that serializes each customer's commands (`engine.runtime`)."""

__version__ = "0.1.0"
