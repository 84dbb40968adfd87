"""The one exception type for user mistakes (bad prompt, missing file, wrong option).

The CLI prints its message without a traceback and exits with status 2; library callers
catch it like any ValueError.
"""


class UserError(ValueError):
    """A mistake in what the user asked for, with a message that says how to fix it."""
