"""Every configuration property, read from the fields that declare them (``model``), in the
order of their fields: that of the documentation's table and of the loader's checks.

Names follow the original service's configuration file, so an operator can carry values
over.
"""

from collections import Counter

from kv_storage.config.model import Config
from schemas.settings import Property, properties_of

PROPERTIES: tuple[Property, ...] = properties_of(Config)

_twice = [name for name, count in Counter(prop.name for prop in PROPERTIES).items() if count > 1]
if _twice:  # two fields would read one value, and the second declaration would go unseen
    raise RuntimeError(f"properties declared by more than one field: {', '.join(_twice)}")

PROPERTIES_BY_NAME: dict[str, Property] = {prop.name: prop for prop in PROPERTIES}
