"""napari glue without Qt widgets: the reader and the sample data."""
