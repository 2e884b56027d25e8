"""The API's blueprints, one module per resource family."""
