"""Error types the CLI turns into one-line messages (never a traceback)."""


class PrepcodecError(Exception):
    """Base class: anything a user can cause (bad input, missing backend, missing weights)."""


class InputError(PrepcodecError):
    """An input file, array or argument is unusable (missing, corrupt, wrong shape, out of range)."""


class BackendUnavailable(PrepcodecError):
    """A codec or model backend is not installed; the message says how to get it."""


class BitstreamError(PrepcodecError):
    """A bitstream is truncated, corrupt or not of the expected format."""


class WeightsMissing(PrepcodecError):
    """Model weights are not in the cache; the message names the command that fetches them."""


class DataMissing(PrepcodecError):
    """A named data set (e.g. under ../shared/data) is not present."""


class OutputError(PrepcodecError):
    """An output could not be written (no space, read-only, no permission); nothing half-written is left."""
