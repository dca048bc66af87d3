"""The run context, kept at this path for imports that name it here: the class lives in the
contract layer (:mod:`zoo.run_context`), where the hook specs name it."""
from zoo.run_context import RunContext  # noqa: F401
