"""The one exception type users see: its message is a complete, one-line explanation."""


class HslDemoError(Exception):
    """Bad input or a missing resource; the CLI prints it without a traceback, the UI as a warning."""
