"""The package's one error type: bad input (dtype, device, shape, a plan for another model)."""


class KascadeError(ValueError):
    """Raised with one line naming the argument and what was expected."""
