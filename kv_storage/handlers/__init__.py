"""HTTP handlers: validate input with the schemas, delegate, render the answer."""
