"""The one exception type the command line turns into a one-line message."""


class DualcodecError(Exception):
    """A problem with the user's input or options: printed as one line, no traceback."""


class DamagedData(DualcodecError):
    """Part of a file that does not parse: concealed by the decoder unless it is strict."""


class StartPastEnd(DualcodecError):
    """A ``--start`` at or past the last frame of a source of ``count`` frames."""

    def __init__(self, source, count: int, start: int) -> None:
        super().__init__(f"{source} has {count} frame{'s' * (count != 1)}: --start {start} is past its end "
                         "(frames count from 0)")
