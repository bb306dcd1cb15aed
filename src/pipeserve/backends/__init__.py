"""Built-in backends. Each module imports its optional dependencies lazily."""
