"""The one error of the configuration package."""


class ConfigError(Exception):
    """A configuration value (or file) that the service cannot start with."""
