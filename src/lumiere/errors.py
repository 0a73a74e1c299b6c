"""Error types whose message is shown to the user as one line (see ``lumiere.cli``)."""


class LumiereError(Exception):
    """A failure caused by the user's input or environment, reported without a traceback."""


class ConfigError(LumiereError):
    """An argument or config value that cannot work (wrong frame count, alpha out of range, ...)."""


class InputFileError(LumiereError):
    """A user-supplied file that is missing, unreadable or inconsistent with the others."""
