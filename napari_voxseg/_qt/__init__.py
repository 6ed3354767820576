"""Qt widgets. Only this subpackage imports Qt."""
