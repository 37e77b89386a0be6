"""The package's layers, in docs/design.md's order (a module of centerx may import
its own layer and those before it), for the tests that read the package's source."""

LAYERS = [
    {"version", "text_files", "console", "device", "downloads", "config_files", "plugins", "suggestions"},
    {"config"},
    {"checkpoint", "modeling"},
    {"data"},
    {"engine"},
    {"deploy"},
    # the front, and the stubs that name where a module moved out of the package
    {"__init__", "experiments", "config_reference"},
]
# the leaf helpers, which import no other part of centerx (not even the config)
LEAF_HELPERS = LAYERS[0]
