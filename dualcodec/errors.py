"""The one exception type the command line turns into a one-line message."""


class DualcodecError(Exception):
    """A problem with the user's input or options: printed as one line, no traceback."""


class DamagedData(DualcodecError):
    """Part of a file that does not parse: concealed by the decoder unless it is strict."""
